"""Read inputs and targets from `.npz`, `.npy` and HDF5 files, one batch at a time.

`.npz` arrays are read with `allow_pickle=False`, so an object array is
rejected instead of unpickled. `.npy` files are memory-mapped and HDF5
datasets are sliced per batch, so files larger than memory can be scanned.
"""

import os
import tokenize
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from nandoctor.errors import DataLoadError

RANDOM_SAMPLES = 64
"""Number of samples drawn when no data file is given and --max-samples is unset."""
RANDOM_SEED = 0

# Exceptions that numpy and zipfile raise for a truncated or corrupted file.
# BadZipFile and zlib.error subclass neither OSError nor ValueError. numpy
# parses a .npy header as a Python literal, so a damaged header raises
# SyntaxError or TokenError, and a damaged shape can ask for more memory than
# exists (MemoryError).
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, SyntaxError,
                tokenize.TokenError, MemoryError)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None for any size) and dtype of one model input or output."""

    name: str
    shape: tuple
    dtype: str


@dataclass
class Batch:
    """One batch of samples with the index of its first sample in the data."""

    start: int
    inputs: list
    targets: list | None


class DataSource:
    """Arrays for each model input (and output, when targets exist) of equal length."""

    def __init__(self, path, kind, inputs, targets, input_keys, target_keys, num_samples):
        self.path = path
        """Path of the data file, or None for random inputs."""
        self.kind = kind
        """One of "npz", "npy", "h5", "random", or "memory" for arrays passed in Python."""
        self.input_keys = input_keys
        """Key of each model input in the file."""
        self.target_keys = target_keys
        """Key of each target, or an empty list without targets."""
        self.num_samples = num_samples
        """Number of samples the scan reads (after --max-samples)."""
        self._inputs = inputs
        self._targets = targets
        self._handle = None

    @property
    def has_targets(self):
        return bool(self._targets)

    def batches(self, batch_size, input_specs):
        """Yield `Batch` objects in file order, cast to the model's input dtypes.

        Raises:
            DataLoadError: A batch cannot be read, or an input value does not
                fit the model's input dtype (such as 1e300 for float32).
        """
        for start in range(0, self.num_samples, batch_size):
            stop = min(start + batch_size, self.num_samples)
            inputs = [
                _cast_input(self._read(array, key, start, stop), self.path, key, spec, start)
                for array, key, spec in zip(self._inputs, self.input_keys, input_specs)
            ]
            targets = None
            if self._targets:
                targets = [self._read(array, key, start, stop) for array, key in zip(self._targets, self.target_keys)]
                targets = [t.astype("float32") if t.dtype.kind == "f" and t.dtype.itemsize < 4 else t for t in targets]
            yield Batch(start, inputs, targets)

    def _read(self, array, key, start, stop):
        """Read samples `start:stop` of one array; an HDF5 dataset is read from disk here."""
        try:
            return np.asarray(array[start:stop])
        except (OSError, KeyError, RuntimeError) as error:  # h5py's errors for a damaged file
            raise DataLoadError(
                f"failed to read samples {start} to {stop - 1} of array '{key}' from {self.path} "
                f"({error}); the file may be truncated or corrupted, so write it again."
            ) from error

    def take(self, indices, input_specs):
        """Return the samples at `indices` (positions in the file) as one `Batch`.

        `start` is the first index; for a shuffled batch the positions are not
        contiguous, so callers keep `indices` to name samples.
        """
        indices = np.asarray(indices)
        order = np.argsort(indices)
        ordered = indices[order]
        restore = np.argsort(order)

        def gather(array):
            # h5py reads only increasing index lists, so read sorted and restore the order.
            return np.asarray(array[ordered.tolist()] if self.kind == "h5" else array[ordered])[restore]

        inputs = [gather(array).astype(spec.dtype, copy=False) for array, spec in zip(self._inputs, input_specs)]
        targets = [gather(array) for array in self._targets] if self._targets else None
        return Batch(int(indices[0]) if len(indices) else 0, inputs, targets)

    def close(self):
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def open_data(path, input_specs, output_specs, x_keys=(), y_keys=(), max_samples=None):
    """Open a data file and check it against the model's inputs.

    Args:
        path: A `.npz`, `.npy`, `.h5` or `.hdf5` file, or None to draw inputs
            from a standard normal distribution with a fixed seed.
        input_specs: A `TensorSpec` per model input.
        output_specs: A `TensorSpec` per model output.
        x_keys: Keys of the input arrays, one per model input. Default: "x" for
            a single input, else the model's input names.
        y_keys: Keys of the target arrays. Default: "y" for a single output,
            else the model's output names; without them the scan runs without
            targets.
        max_samples: Read at most this many samples (default: all).

    Returns:
        A `DataSource`.

    Raises:
        DataLoadError: The file is missing or unreadable, lacks a key, or its
            arrays do not fit the model.
    """
    if path is None:
        return _random_source(input_specs, max_samples)
    if os.path.isdir(path):
        raise DataLoadError(f"{path} is a directory; expected a .npz, .npy, .h5 or .hdf5 data file.")
    if not os.path.isfile(path):
        raise DataLoadError(f"data file not found: {path}")
    _check_readable(path)

    extension = os.path.splitext(path)[1].lower()
    handle = None
    if extension == ".npz":
        arrays = _NpzArrays(path)
    elif extension == ".npy":
        arrays = {"x": _load_npy(path)}
        if not x_keys:
            x_keys = ("x",)
        if len(input_specs) != 1:
            raise DataLoadError(
                f"{path}: a .npy file contains one array, but the model has {len(input_specs)} "
                "inputs; save them in a .npz with one key per input."
            )
        if y_keys:
            raise DataLoadError(f"{path}: a .npy file contains inputs only; --y-key needs a .npz or .h5 file.")
    elif extension in (".h5", ".hdf5"):
        handle = _open_h5(path)
        arrays = _H5Arrays(handle, path)
    else:
        raise DataLoadError(
            f"{path}: unsupported data file extension '{extension}'; use .npz, .npy, .h5 or .hdf5."
        )

    try:
        input_keys = _input_keys(path, arrays, input_specs, x_keys)
        inputs = [arrays[key] for key in input_keys]
        target_keys = _target_keys(path, arrays, output_specs, y_keys)
        targets = [arrays[key] for key in target_keys]

        for key, array, spec in zip(input_keys, inputs, input_specs):
            _check_array(path, key, array, spec, "input")
        for key, array, spec in zip(target_keys, targets, output_specs):
            _check_dtype(path, key, array)
            _check_target_shape(path, key, array, spec)
        lengths = {key: len(array) for key, array in zip(input_keys + target_keys, inputs + targets)}
        if len(set(lengths.values())) > 1:
            sizes = ", ".join(f"{key}: {n}" for key, n in lengths.items())
            raise DataLoadError(f"{path}: arrays have different numbers of samples ({sizes}); give every array the same first dimension.")
        num_samples = next(iter(lengths.values()))
        if num_samples == 0:
            raise DataLoadError(f"{path}: the arrays hold zero samples; pass a file with at least one sample.")
        if max_samples is not None:
            num_samples = min(num_samples, max_samples)
    except BaseException:
        if handle is not None:
            handle.close()
        raise

    source = DataSource(path, extension.lstrip(".").replace("hdf5", "h5"), inputs, targets, input_keys, target_keys, num_samples)
    source._handle = handle
    return source


def _check_readable(path):
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise DataLoadError(
            f"cannot read data file {path}: {error.strerror}; check the file's permissions."
        ) from error


def _cast_input(values, path, key, spec, start):
    """Cast one batch of an input array to the model's input dtype.

    A cast that changes a value, such as float64 1e300 to float32 (+Inf) or
    int64 2**40 to int32, raises instead of handing the model values that the
    file does not contain.
    """
    dtype = np.dtype(spec.dtype)
    if values.dtype == dtype:
        return values
    with np.errstate(over="ignore", invalid="ignore"):
        cast = values.astype(dtype)
    if dtype.kind == "f":
        changed = np.isfinite(values) & ~np.isfinite(cast)
    else:
        changed = cast != values
    if changed.any():
        flat = np.flatnonzero(changed.reshape(len(values), -1).any(axis=1))
        sample = int(flat[0])
        value = values[sample][changed[sample]].flat[0] if values.ndim > 1 else values[sample]
        limit = np.finfo(dtype).max if dtype.kind == "f" else np.iinfo(dtype).max
        raise DataLoadError(
            f"{path}: array '{key}' contains {value:.6g} at sample {start + sample}, which does not fit "
            f"the {dtype} of model input '{spec.name}' (largest magnitude {limit:.6g}); rescale "
            "the data or drop those samples."
        )
    return cast


def _random_source(input_specs, max_samples):
    rng = np.random.default_rng(RANDOM_SEED)
    num_samples = max_samples or RANDOM_SAMPLES
    inputs = []
    for spec in input_specs:
        if any(dim is None for dim in spec.shape[1:]):
            raise DataLoadError(
                f"model input '{spec.name}' has shape {_shape_text(spec.shape)} with unknown "
                "dimensions, so random inputs cannot be drawn; pass a data file."
            )
        shape = (num_samples,) + tuple(spec.shape[1:])
        if np.dtype(spec.dtype).kind in "iub":
            inputs.append(np.zeros(shape, dtype=spec.dtype))
        else:
            inputs.append(rng.standard_normal(shape).astype(spec.dtype))
    keys = [spec.name for spec in input_specs]
    return DataSource(None, "random", inputs, [], keys, [], num_samples)


class _NpzArrays:
    """Lazy mapping from key to array over an `.npz` file, without pickles."""

    def __init__(self, path):
        self.path = path
        try:
            with np.load(path, allow_pickle=False) as archive:
                self.keys = list(archive.files)
        except _READ_ERRORS as error:
            raise DataLoadError(
                f"failed to read {path} as .npz: it is not a valid npz archive; write it with numpy.savez."
            ) from error
        self._cache = {}

    def __contains__(self, key):
        return key in self.keys

    def __getitem__(self, key):
        if key not in self._cache:
            try:
                with np.load(self.path, allow_pickle=False) as archive:
                    self._cache[key] = archive[key]
            except ValueError as error:
                if "allow_pickle" in str(error) or "Object arrays" in str(error):
                    raise DataLoadError(
                        f"{self.path}: array '{key}' is an object array, which would need "
                        "unpickling; nandoctor never loads pickles, so save it as a numeric array."
                    ) from error
                raise DataLoadError(
                    f"failed to read array '{key}' from {self.path} ({error}); the file may be "
                    "truncated or corrupted, so write it again with numpy.savez."
                ) from error
            except _READ_ERRORS as error:
                raise DataLoadError(
                    f"failed to read array '{key}' from {self.path} ({error}); the file may be "
                    "truncated or corrupted, so write it again with numpy.savez."
                ) from error
        return self._cache[key]


def _load_npy(path):
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        # numpy rejects an object array with one of these, with or without mmap_mode.
        if any(text in str(error) for text in ("allow_pickle", "Object arrays", "Python objects")):
            raise DataLoadError(
                f"{path} contains an object array, which would need unpickling; nandoctor "
                "never loads pickles, so save it as a numeric array."
            ) from error
        raise DataLoadError(
            f"failed to read {path} as .npy ({error}); the file may be truncated or corrupted, "
            "so write it again with numpy.save."
        ) from error
    except _READ_ERRORS as error:
        raise DataLoadError(
            f"failed to read {path} as .npy ({type(error).__name__}: {error}); the file may be "
            "truncated or corrupted, so write it again with numpy.save."
        ) from error


def _open_h5(path):
    try:
        import h5py

        return h5py.File(path, "r")
    except OSError as error:
        raise DataLoadError(f"failed to read {path} as HDF5 ({error}); check that the file is complete.") from error


class _H5Arrays:
    """Mapping from dataset path to a lazily sliced h5py dataset."""

    def __init__(self, handle, path):
        import h5py

        self.path = path
        self.keys = []
        try:
            handle.visititems(lambda name, obj: self.keys.append(name) if isinstance(obj, h5py.Dataset) else None)
        except (OSError, KeyError, RuntimeError) as error:  # h5py's errors for a damaged file
            handle.close()
            raise DataLoadError(
                f"failed to list the datasets in {path} ({error}); the file may be truncated or "
                "corrupted, so write it again."
            ) from error
        self._handle = handle

    def __contains__(self, key):
        return key in self.keys

    def __getitem__(self, key):
        return self._handle[key]


def _input_keys(path, arrays, input_specs, x_keys):
    if x_keys:
        keys = list(x_keys)
        if len(keys) != len(input_specs):
            raise DataLoadError(
                f"{len(keys)} --x-key values for a model with {len(input_specs)} inputs "
                f"({', '.join(spec.name for spec in input_specs)}); give one per input, in order."
            )
    elif len(input_specs) == 1:
        name = input_specs[0].name
        keys = ["x"] if "x" in arrays or name not in arrays else [name]
    else:
        keys = [spec.name for spec in input_specs]
    for key in keys:
        if key not in arrays:
            raise DataLoadError(
                f"{path} has no array '{key}' for the model's inputs; it has "
                f"{_key_list(arrays.keys)}. Select the input arrays with --x-key (once per input)."
            )
    return keys


def _target_keys(path, arrays, output_specs, y_keys):
    if y_keys:
        keys = list(y_keys)
        for key in keys:
            if key not in arrays:
                raise DataLoadError(
                    f"{path} has no array '{key}' for --y-key; it has {_key_list(arrays.keys)}."
                )
        if len(keys) != len(output_specs):
            raise DataLoadError(
                f"{len(keys)} --y-key values for a model with {len(output_specs)} outputs; give one per output, in order."
            )
        return keys
    if len(output_specs) == 1 and "y" in arrays:
        return ["y"]
    names = [spec.name for spec in output_specs]
    if all(name in arrays for name in names):
        return names
    return []


def _check_dtype(path, key, array):
    kind = array.dtype.kind
    if kind == "c":
        raise DataLoadError(
            f"{path}: array '{key}' has the complex dtype {array.dtype}, which Keras layers do not "
            "take; save the real part (or the real and imaginary parts as two features) as float32."
        )
    if kind not in "biuf":
        raise DataLoadError(
            f"{path}: array '{key}' has dtype {array.dtype}, which is not numeric; save it as float32 (or integer ids for an Embedding input)."
        )


def _check_array(path, key, array, spec, role):
    _check_dtype(path, key, array)
    if array.dtype.kind == "f" and np.dtype(spec.dtype).kind in "iu":
        raise DataLoadError(
            f"{path}: array '{key}' has dtype {array.dtype}, but model {role} '{spec.name}' expects {spec.dtype}; save integer ids for it."
        )
    expected = spec.shape
    if array.ndim != len(expected) or any(
        want is not None and have != want for have, want in zip(array.shape[1:], expected[1:])
    ):
        raise DataLoadError(
            f"{path}: array '{key}' has shape {_shape_text(array.shape)}, but model {role} "
            f"'{spec.name}' expects {_shape_text(expected)} (None is any size); reshape the data "
            "or select another array with --x-key."
        )


def _check_target_shape(path, key, array, spec):
    """Reject targets whose shape cannot match the output.

    A rank one above or below the output's is accepted, because Keras losses
    squeeze or expand a trailing axis of size 1 and sparse class labels are
    (batch,) against an output of (batch, classes).
    """
    expected = spec.shape
    if array.ndim == 0 or abs(array.ndim - len(expected)) > 1:
        raise DataLoadError(
            f"{path}: target array '{key}' has shape {_shape_text(array.shape)}, but model output "
            f"'{spec.name}' has shape {_shape_text(expected)}; select the right array with --y-key."
        )
    if array.ndim != len(expected):
        return
    for have, want in zip(array.shape[1:], expected[1:]):
        if want is not None and have not in (want, 1):
            raise DataLoadError(
                f"{path}: target array '{key}' has shape {_shape_text(array.shape)}, but model output "
                f"'{spec.name}' has shape {_shape_text(expected)}; select the right array with --y-key."
            )


def _shape_text(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _key_list(keys):
    keys = list(keys)
    if not keys:
        return "no arrays"
    shown = ", ".join(repr(key) for key in keys[:20])
    return shown + (f" and {len(keys) - 20} more" if len(keys) > 20 else "")
