"""Where and in what precision models run, and how much the libraries underneath may print.

``resolve(device, dtype)`` turns the user's choice (``--device`` / ``--dtype``, the ``device=`` /
``dtype=`` arguments of :func:`yollava.models.load_model`, or ``YOLLAVA_DEVICE`` / ``YOLLAVA_DTYPE``)
into a concrete pair: ``auto`` is CUDA with bf16 (fp16 on GPUs without bf16) when a GPU is present,
else the CPU with fp32. Concept rows are always kept and trained in fp32 (see ``concepts.bank``).

``quiet()`` silences transformers' and huggingface_hub's warnings and "Loading weights" bars (our own
progress bars stay); ``YOLLAVA_VERBOSE=1`` or ``--verbose`` keeps them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

import torch

_DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}


def dtype_name(dtype: torch.dtype) -> str:
    """The short name ``--dtype`` takes for ``dtype`` (``"bf16"``, ``"fp16"``, ``"fp32"``; else torch's own)."""
    return next((name for name, d in _DTYPES.items() if d == dtype), str(dtype).removeprefix("torch."))


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    choice = str(device or os.environ.get("YOLLAVA_DEVICE") or "auto").lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(choice)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} requested but CUDA is not available here (torch {torch.__version__}); use --device cpu")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    choice = str(dtype or os.environ.get("YOLLAVA_DTYPE") or "auto").lower().removeprefix("torch.")
    if choice == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if choice not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of auto, bf16, fp16, fp32")
    return _DTYPES[choice]


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware (AVX-512 BF16 / AMX CPUs, Ampere and later GPUs):
    there a bf16 copy of a frozen fp32 model trains several times faster; elsewhere bf16 is emulated and slower."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev)


def configure(device: str | None = None, dtype: str | None = None, verbose: bool = False) -> None:
    """What the CLI's global options do: pick the device/precision for every model this process (and
    the workers it starts) loads, and silence library noise unless ``verbose``."""
    if device:
        resolve_device(device)  # fail early on an unusable choice
        os.environ["YOLLAVA_DEVICE"] = device
    if dtype:
        resolve_dtype(dtype, torch.device("cpu"))
        os.environ["YOLLAVA_DTYPE"] = dtype
    quiet(not verbose)
    import sys

    if not sys.stderr.isatty():  # logs and pipes: a progress line every 30 s at most, not a redraw per step
        os.environ.setdefault("TQDM_MININTERVAL", "30")


# ---- console noise ------------------------------------------------------------------------------
def verbose() -> bool:
    return os.environ.get("YOLLAVA_VERBOSE", "").lower() in ("1", "true", "yes")


_QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
              "TOKENIZERS_PARALLELISM": "false"}
_LIBRARY_LOGGERS = ("transformers", "huggingface_hub", "accelerate", "torch._dynamo", "tokenizers")


def quiet(enable: bool | None = None) -> None:
    """Turn library noise off (default) or on (``enable=False`` or ``YOLLAVA_VERBOSE=1``)."""
    loud = verbose() if enable is None else not enable
    if loud:  # undo what an earlier quiet() in this process (inherited by its children) set
        os.environ["YOLLAVA_VERBOSE"] = "1"
        for var, value in _QUIET_ENV.items():
            if os.environ.get(var) == value:
                del os.environ[var]
        return
    for var, value in _QUIET_ENV.items():
        os.environ.setdefault(var, value)
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("transformers", "torch", "huggingface_hub", "timm", "accelerate"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    import sys

    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


@contextlib.contextmanager
def quiet_library():
    """Silence the libraries for one block (model loading) unless verbose output was asked for."""
    if verbose():
        yield
        return
    quiet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def device_report() -> dict:
    """What ``yollava doctor`` prints: torch, devices and their memory."""
    import transformers

    info: dict = {"torch": torch.__version__, "transformers": transformers.__version__, "cuda_available": torch.cuda.is_available(), "devices": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            info["devices"].append({"index": i, "name": p.name, "total_gib": round(total / 2**30, 1), "free_gib": round(free / 2**30, 1),
                                    "bf16": torch.cuda.is_bf16_supported()})
    dev, dt = resolve()
    info["default_device"], info["default_dtype"] = str(dev), str(dt).removeprefix("torch.")
    try:
        import psutil

        vm = psutil.virtual_memory()
        info["ram_gib"] = {"total": round(vm.total / 2**30, 1), "available": round(vm.available / 2**30, 1)}
    except ImportError:
        pass
    info["cpu_threads"] = torch.get_num_threads()
    info["cpu_native_bf16"] = native_bf16(torch.device("cpu"))
    return info
