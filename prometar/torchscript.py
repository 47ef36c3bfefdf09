"""Reading the weights of a TorchScript archive without running anything from it.

OpenAI released CLIP as TorchScript archives (``ViT-B-16.pt``). ``torch.jit.load`` compiles the
archive's code and rebuilds its objects, and ``torch.load(weights_only=True)`` refuses such
archives, so neither is a safe way to read a file that may come from shared storage. This module
reads the archive's ``data.pkl`` with an unpickler that knows a short allow-list only:

- ``__torch__.*`` classes become inert :class:`ScriptObject` records of their attributes (the
  archive's ``code/`` is never read or compiled);
- tensors are rebuilt from the archive's ``data/`` entries (``torch._utils._rebuild_tensor_v2``
  over typed storages), and ``collections.OrderedDict`` and ``torch.jit._pickle.build_*`` list
  helpers are accepted as data.

Any other global — a builtin, ``os.system``, a class outside that list — is refused before it is
called. The tensors found by walking the attribute records form the state dict
(``visual.transformer.resblocks.0.attn.in_proj_weight``, ...), as ``module.state_dict()`` names them.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from prometar.errors import InputError

__all__ = ["ScriptObject", "TorchScriptError", "is_torchscript_archive", "read_torchscript_state_dict"]

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_LIST_BUILDERS = ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist")


class TorchScriptError(InputError):
    """A TorchScript archive that cannot be read as weights; the message names the file."""


class ScriptObject:
    """An inert stand-in for an instance of a TorchScript class: its attributes, nothing else."""

    def __init__(self, qualified_name: str) -> None:
        self.qualified_name = qualified_name
        self.attributes: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.qualified_name}: attributes are a {type(state).__name__}")
        self.attributes = dict(state)


def _script_class(qualified_name: str) -> type:
    # NEWOBJ calls cls.__new__(cls); a subclass per name keeps the name for messages.
    def new(cls: type) -> ScriptObject:
        obj = object.__new__(cls)
        ScriptObject.__init__(obj, qualified_name)
        return obj

    return type("ScriptObject", (ScriptObject,), {"__new__": new})


def _rebuild_parameter(data: Any, requires_grad: Any, _backward_hooks: Any = None) -> torch.Tensor:
    # Only a tensor is accepted: the weights are data, not a Parameter with hooks.
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"a parameter built from a {type(data).__name__}")
    return data.detach()


def _identity(value: Any) -> Any:
    return value


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            return self._classes.setdefault(qualified, _script_class(qualified))
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return name  # persistent_load turns (storage, "FloatStorage", ...) into a storage
        if module == "torch.jit._pickle" and (name in _LIST_BUILDERS or name == "restore_type_tag"):
            return _identity if name != "restore_type_tag" else (lambda value, _type=None: value)
        raise pickle.UnpicklingError(f"refused {module}.{name}: only tensors and module attributes are read")

    def persistent_load(self, pid: Any) -> Any:
        if not (
            isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and pid[1] in _STORAGE_DTYPES
        ):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:100]}")
        _, storage_type, key, _location, numel = pid
        dtype = _STORAGE_DTYPES[storage_type]
        try:
            raw = self._archive.read(f"{self._prefix}/data/{key}")
        except KeyError:
            raise pickle.UnpicklingError(f"storage {key!r} is missing from the archive") from None
        element = torch.empty((), dtype=dtype).element_size()
        if not isinstance(numel, int) or len(raw) < numel * element:
            raise pickle.UnpicklingError(f"storage {key!r} holds {len(raw)} bytes, fewer than {numel} values")
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether ``path`` is a zip archive laid out as TorchScript saves modules (``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(member.endswith("constants.pkl") for member in archive.namelist())


def _collect(obj: Any, prefix: str, out: dict[str, torch.Tensor], depth: int = 0) -> None:
    if depth > 64:
        raise TorchScriptError("module attributes nest deeper than 64 levels")
    for name, value in obj.attributes.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, ScriptObject):
            _collect(value, f"{prefix}{name}.", out, depth + 1)


def read_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a TorchScript module archive by attribute path, read without running its code.

    Raises:
        TorchScriptError: The file is no such archive, or its data asks for anything beyond
            tensors and module attributes (the message names the file and what was refused).
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if m.endswith("/data.pkl") and m.count("/") == 1]
            if len(members) != 1:
                raise TorchScriptError(f"{path}: not a TorchScript archive (no single top-level data.pkl)")
            prefix = members[0].split("/", 1)[0]
            root = _WeightsUnpickler(archive.read(members[0]), archive, prefix).load()
    except TorchScriptError:
        raise
    except Exception as error:  # noqa: BLE001 - a corrupt or hostile archive is one error to the user
        raise TorchScriptError(
            f"{path}: cannot be read as weights ({type(error).__name__}: {str(error)[:200]})"
        ) from None
    if not isinstance(root, ScriptObject):
        raise TorchScriptError(f"{path}: holds a {type(root).__name__}, not a TorchScript module")
    state: dict[str, torch.Tensor] = {}
    _collect(root, "", state)
    return state
