"""FLOPs and parameters of models built on PyTorch's meta device (shapes only: no memory, no weights).

:func:`count_flops` runs a function under ``torch.utils.flop_counter.FlopCounterMode``, which counts the FLOPs of
every matrix product and convolution from the shapes alone (2 FLOPs per multiply-add; elementwise work, norms
and softmax are not counted, as in every published FLOP count of these models).

Models whose forward derives indices from integer inputs (image-token positions, grid sizes, text masks) cannot
run entirely on meta tensors: such code calls ``.item()`` or ``.tolist()``. The inputs that carry such integers
are therefore passed as small real CPU tensors, and :class:`PromoteToMeta` moves a CPU tensor onto the meta device
whenever an operation mixes it with meta tensors. Index arithmetic then runs for real, on CPU, while every
tensor with a model dimension stays on meta; likewise an integer tensor the model itself copies from CPU onto the
meta device (shapes and offsets written with ``torch.tensor(..., device=x.device)``) stays on CPU. A boolean read out of a meta tensor (``if mask.all():``, how
transformers decides that an attention mask has no padding) answers ``True``: the synthetic inputs are never
padded; reading any other number out of a meta tensor is an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


def _leaves(args: Any, kwargs: dict[str, Any]) -> list[Any]:
    """Tensors among the arguments of an operation (one level of list/tuple nesting, as aten ops take)."""
    out = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, (list, tuple)):
            out.extend(value)
        else:
            out.append(value)
    return out


def _promote(args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    import torch

    def move(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x if x.is_meta else x.to("meta")
        if isinstance(x, (list, tuple)):
            return type(x)(move(v) for v in x)
        return x

    return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}


def _check_scalar_read(func: Any, args: Any) -> Any:
    """``True`` for a boolean read out of a meta tensor (see the module docstring); ``None`` when not one."""
    import torch

    if func is torch.ops.aten._local_scalar_dense.default and args[0].is_meta:
        if args[0].dtype == torch.bool:
            return True  # a mask check such as ``mask.all()``: synthetic inputs have no padding
        raise RuntimeError("a model read a number out of a meta tensor; pass that input as a CPU tensor")
    return None


def _keeps_integers(func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    """A CPU integer tensor the model copies onto meta (``torch.tensor(shape, device=x.device)``) stays on CPU,
    so its values can still be read; ``None`` for any other operation."""
    import torch

    if func is torch.ops.aten._to_copy.default and str(kwargs.get("device", "")) == "meta":
        source = args[0]
        dtype = kwargs.get("dtype") or source.dtype
        if not source.is_meta and not dtype.is_floating_point and not dtype.is_complex:
            return source.to(dtype=dtype, copy=True)
    return None


def _mixes_meta(args: Any, kwargs: dict[str, Any]) -> bool:
    import torch

    tensors = [x for x in _leaves(args, kwargs) if isinstance(x, torch.Tensor)]
    return any(t.is_meta for t in tensors) and not all(t.is_meta for t in tensors)


def _promote_mode() -> Any:
    # torch is heavy: the dispatch mode class is created on first use
    from torch.utils._python_dispatch import TorchDispatchMode

    class PromoteToMeta(TorchDispatchMode):
        """Move CPU tensor arguments of an operation onto the meta device when another argument is on it."""

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
            kwargs = kwargs or {}
            scalar = _check_scalar_read(func, args)
            if scalar is not None:
                return scalar
            kept = _keeps_integers(func, args, kwargs)
            if kept is not None:
                return kept
            if _mixes_meta(args, kwargs):
                args, kwargs = _promote(args, kwargs)
            return func(*args, **kwargs)

    return PromoteToMeta()


@contextlib.contextmanager
def _integer_tensors_on_cpu() -> Iterator[None]:
    """``torch.tensor(ints, device=<meta>)`` makes a CPU tensor for the duration (it keeps its values; the
    constructor does not go through the dispatcher, so :class:`PromoteToMeta` cannot see it)."""
    import torch

    original = torch.tensor

    def tensor(data: Any, *args: Any, **kwargs: Any) -> Any:
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "meta":
            made = original(data, *args, **{**kwargs, "device": "cpu"})
            return made.to("meta") if made.dtype.is_floating_point or made.is_complex() else made
        return original(data, *args, **kwargs)

    torch.tensor = tensor
    try:
        yield
    finally:
        torch.tensor = original


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of everything ``fn`` runs (under ``no_grad``), counted by ``FlopCounterMode``."""
    # torch is heavy: imported when FLOPs are counted
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # promotion sees each operation first, then the counter
    with torch.no_grad(), _integer_tensors_on_cpu(), counter, _promote_mode():
        fn()
    return int(counter.get_total_flops())


@contextlib.contextmanager
def promoted() -> Iterator[None]:
    """Run a block (under ``no_grad``) with CPU tensors promoted to meta where they meet meta tensors; no counting."""
    import torch

    with torch.no_grad(), _integer_tensors_on_cpu(), _promote_mode():
        yield


def run_promoted(fn: Callable[[], Any]) -> Any:
    """``fn()`` inside :func:`promoted`."""
    with promoted():
        return fn()


def count_params(module: Any) -> int:
    """Parameters of ``module``, each shared (tied) tensor counted once."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
