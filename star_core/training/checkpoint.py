"""Checkpoints of meta-trained optimizers: safetensors files, written atomically, never pickled.

One checkpoint is one safetensors file:

- every leaf of ``theta`` under its path, e.g. ``mlp/w0``, ``decays/momentum``;
- every leaf of the outer optimizer state under a name that does not depend on where a
  transformation sits in ``optax.chain``: ``outer_state/<state class>/<field>/<path>``, e.g.
  ``outer_state/scale_by_adam_state/mu/mlp/w0`` (:func:`stable_named_leaves`); absent in an
  exported optimizer. Version-1 files named them by position (``outer_state/2/0/mu/mlp/w0``)
  and are still read;
- JSON metadata in the safetensors header: ``format``, ``format_version``, ``optimizer`` (its
  registry name), ``optimizer_config`` (its config class's fields, all of them), ``step`` and
  ``meta_train_config`` (``MetaTrainConfig.to_dict()``; older files hold the flat layout, which
  ``MetaTrainConfig.from_dict`` still reads), plus whatever else the writer adds (each value
  JSON-encoded under its own key).

Large pytrees that only resuming needs (the estimator's PES particles) go in a second file with
the same layout (:func:`save_tree` / :func:`load_tree`). Every file is written to a temporary
file in the target folder, fsynced and moved into place with ``os.replace``, so a reader sees
either the old file or the complete new one.

Use a checkpoint with one line (docs/algorithm.md, "Use after meta-training")::

    tx = star_core.load_optimizer("run/checkpoints/step_001000.safetensors")
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import safetensors
import safetensors.numpy

# Identifies our files among other safetensors files, and the layout version we write.
FORMAT_NAME = "star-checkpoint"
FORMAT_VERSION = 2
# Layout versions we read: 1 named outer-state leaves by their position in optax.chain.
READABLE_VERSIONS = (1, 2)
# Name prefix of the outer optimizer state's leaves.
OUTER_STATE_PREFIX = "outer_state"
# Separator between the components of a leaf's path.
SEPARATOR = "/"
# Permissions of written files (mkstemp creates them owner-only).
FILE_MODE = 0o644
# Metadata keys every checkpoint carries.
REQUIRED_METADATA = ("format", "format_version", "optimizer", "optimizer_config", "step")
# Folder of a meta-training output folder that holds its checkpoints.
CHECKPOINT_DIR = "checkpoints"
# Name of a main checkpoint file in CHECKPOINT_DIR (not the step_N.estimator.safetensors files).
CHECKPOINT_NAME = re.compile(r"step_(\d+)\.safetensors")


class Checkpoint(NamedTuple):
    """The content of a checkpoint file.

    theta: nested dicts of numpy arrays. outer_state: leaves by name (without the prefix); fill
    them into a template with :func:`fill_tree`. metadata: decoded JSON values.
    """

    theta: dict
    outer_state: dict[str, np.ndarray]
    metadata: dict[str, Any]


def _key_name(entry: Any) -> str:
    if isinstance(entry, jax.tree_util.DictKey):
        name = str(entry.key)
    elif isinstance(entry, jax.tree_util.SequenceKey):
        name = str(entry.idx)
    elif isinstance(entry, jax.tree_util.GetAttrKey):
        name = entry.name
    elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
        name = str(entry.key)
    else:
        raise ValueError(f"cannot name pytree path entry {entry!r}")
    if not name or SEPARATOR in name:
        raise ValueError(f"pytree key {name!r} must be non-empty and must not contain '/'")
    return name


def _is_prng_key(leaf: Any) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def named_leaves(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten a pytree into ``{"a/b/c": numpy array}``; typed PRNG keys are stored as key data."""
    named = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = ([prefix] if prefix else []) + [_key_name(entry) for entry in path]
        name = SEPARATOR.join(parts) if parts else prefix or "leaf"
        if _is_prng_key(leaf):
            leaf = jax.random.key_data(leaf)
        named[name] = np.array(leaf, order="C")  # a C-contiguous copy; 0-d stays 0-d
    return named


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def stable_named_leaves(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Like :func:`named_leaves`, but a NamedTuple reached through a tuple position is named by
    its class (``ScaleByAdamState`` -> ``scale_by_adam_state``) instead of its position, and
    the positions of plain tuples holding tuples (nested ``optax.chain`` states) are left out.

    An optimizer state such as ``optax.chain(a, b, adam)``'s then keeps its leaf names when
    transformations are added or reordered. Two states of one class at one level collide and
    raise ValueError.
    """
    named = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts, node = ([prefix] if prefix else []), tree
        for entry in path:
            child = _child(node, entry)
            positional = isinstance(entry, jax.tree_util.SequenceKey)
            if positional and _is_namedtuple(child):
                parts.append(_snake_case(type(child).__name__))
            elif not (positional and type(child) is tuple):  # nested chains are flattened
                parts.append(_key_name(entry))
            node = child
        name = SEPARATOR.join(parts) if parts else prefix or "leaf"
        if name in named:
            raise ValueError(f"two leaves of the tree would both be named {name!r}")
        if _is_prng_key(leaf):
            leaf = jax.random.key_data(leaf)
        named[name] = np.array(leaf, order="C")
    return named


def _is_namedtuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _child(node: Any, entry: Any) -> Any:
    if isinstance(entry, jax.tree_util.SequenceKey):
        return node[entry.idx]
    if isinstance(entry, jax.tree_util.DictKey):
        return node[entry.key]
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return getattr(node, entry.name)
    raise ValueError(f"cannot follow pytree path entry {entry!r}")


def fill_tree(
    template: Any,
    named: dict[str, np.ndarray],
    prefix: str = "",
    source: str = "",
    naming: Any = named_leaves,
) -> Any:
    """The pytree with ``template``'s structure whose leaves are ``named[<path>]``.

    ``naming`` is the function that named the leaves (:func:`named_leaves` or
    :func:`stable_named_leaves`). Shapes and dtypes must match the template exactly; a missing
    or mismatched leaf raises a ValueError naming it. Leaves come back as numpy arrays (typed
    PRNG keys re-wrapped).
    """
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    template_names = naming(template, prefix)
    leaves = []
    for (_, template_leaf), name in zip(paths_leaves, template_names, strict=True):
        if name not in named:
            raise ValueError(f"{source or 'checkpoint'}: missing tensor {name!r}")
        value, expected = named[name], template_names[name]
        if value.shape != expected.shape or value.dtype != expected.dtype:
            raise ValueError(
                f"{source or 'checkpoint'}: tensor {name!r} has {value.dtype}{list(value.shape)},"
                f" expected {expected.dtype}{list(expected.shape)}"
            )
        if _is_prng_key(template_leaf):
            impl = jax.random.key_impl(template_leaf)
            value = jax.random.wrap_key_data(jnp.asarray(value), impl=impl)
        leaves.append(value)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def nested_from_named(named: dict[str, np.ndarray]) -> dict:
    """Rebuild nested dicts from ``{"a/b": array}`` names (the inverse of :func:`named_leaves`
    for dict-of-dict pytrees such as theta)."""
    root: dict = {}
    for name, value in sorted(named.items()):
        *groups, leaf = name.split(SEPARATOR)
        node = root
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = value
    return root


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write a file with the temp-file + fsync + ``os.replace`` discipline of checkpoints."""
    _write_atomically(Path(path), data)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write a UTF-8 text file atomically (see :func:`write_bytes_atomically`)."""
    _write_atomically(Path(path), text.encode("utf-8"))


def tree_bytes(tensors: dict[str, np.ndarray], metadata: dict) -> bytes:
    """Named tensors and JSON-encoded metadata as the bytes of one safetensors file."""
    header = {key: json.dumps(value, sort_keys=True) for key, value in metadata.items()}
    return safetensors.numpy.save(tensors, metadata=header)


def save_tree(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict) -> None:
    """Write named tensors and JSON-encoded metadata to one safetensors file, atomically."""
    _write_atomically(Path(path), tree_bytes(tensors, metadata))


# Bytes of the little-endian header length that opens a safetensors file.
_HEADER_LENGTH_BYTES = 8


def read_tensors(
    source: str | os.PathLike | bytes,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read every tensor and the decoded metadata of a safetensors file (a path, or its bytes).

    Raises FileNotFoundError for a missing file and ValueError for a corrupt one.
    """
    if isinstance(source, bytes):
        return _decode(source, "checkpoint data")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return _decode(path.read_bytes(), str(path))
    except OSError as err:
        raise ValueError(f"{path} is not a readable checkpoint ({err})") from err


def _decode(data: bytes, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        tensors = safetensors.numpy.load(data)
        length = int.from_bytes(data[:_HEADER_LENGTH_BYTES], "little")
        header = json.loads(data[_HEADER_LENGTH_BYTES : _HEADER_LENGTH_BYTES + length])
        metadata = {k: json.loads(v) for k, v in (header.get("__metadata__") or {}).items()}
    except (
        safetensors.SafetensorError,
        json.JSONDecodeError,
        UnicodeDecodeError,
        AttributeError,
        ValueError,
    ) as err:
        raise ValueError(f"{name} is not a readable checkpoint ({err})") from err
    return tensors, metadata


def checkpoint_bytes(theta: Any, outer_state: Any, metadata: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint file of theta, the outer optimizer state (or None) and metadata.

    ``metadata`` must hold ``optimizer`` (registry name), ``optimizer_config`` (dict) and
    ``step``; ``format`` and ``format_version`` are added here.
    """
    missing = [k for k in ("optimizer", "optimizer_config", "step") if k not in metadata]
    if missing:
        raise ValueError(f"checkpoint metadata: missing {missing}")
    tensors = named_leaves(theta)
    if any(name.split(SEPARATOR)[0] == OUTER_STATE_PREFIX for name in tensors):
        raise ValueError(f"theta: the group name {OUTER_STATE_PREFIX!r} is reserved")
    if outer_state is not None:
        tensors.update(stable_named_leaves(outer_state, OUTER_STATE_PREFIX))
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **metadata}
    return tree_bytes(tensors, header)


def save_checkpoint(
    path: str | os.PathLike, theta: Any, outer_state: Any, metadata: dict[str, Any]
) -> None:
    """Write :func:`checkpoint_bytes` to ``path`` atomically."""
    _write_atomically(Path(path), checkpoint_bytes(theta, outer_state, metadata))


def outer_state_naming(metadata: dict[str, Any]) -> Any:
    """The function that named a checkpoint's outer-state leaves (by its format version)."""
    return named_leaves if metadata.get("format_version") == 1 else stable_named_leaves


def load_checkpoint(source: str | os.PathLike | bytes) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (a path or the file's bytes).

    Clear errors for bad files; fill the outer state into a template with
    ``fill_tree(..., naming=outer_state_naming(checkpoint.metadata))``.
    """
    path = "checkpoint data" if isinstance(source, bytes) else source
    tensors, metadata = read_tensors(source)
    if metadata.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a STAR checkpoint (no format={FORMAT_NAME!r} metadata)")
    if metadata.get("format_version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{path}: checkpoint format version {metadata.get('format_version')!r} is not"
            f" supported (this code reads versions {list(READABLE_VERSIONS)})"
        )
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(f"{path}: checkpoint metadata lacks {missing}")
    outer_prefix = OUTER_STATE_PREFIX + SEPARATOR
    theta = {n: t for n, t in tensors.items() if not n.startswith(outer_prefix)}
    outer = {n: t for n, t in tensors.items() if n.startswith(outer_prefix)}
    return Checkpoint(nested_from_named(theta), outer, metadata)


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The main checkpoint files ``step_<N>.safetensors`` of ``folder``, sorted by step ``N``.

    Estimator-state files are excluded; a missing folder has no checkpoints.
    """
    found = []
    for path in Path(folder).glob("step_*.safetensors"):
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match is not None:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the latest checkpoint of a meta-training output folder."""
    path = Path(path)
    if path.is_dir():
        candidates = list_checkpoints(path / CHECKPOINT_DIR)
        if not candidates:
            raise FileNotFoundError(f"no checkpoint in folder {path}")
        return candidates[-1]
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    return path


def load_learned_optimizer(
    path: str | os.PathLike | bytes,
) -> tuple[Any, Any, dict[str, Any]]:
    """``(LearnedOptimizer, theta, metadata)`` of a checkpoint file (or run folder, or the
    bytes of a checkpoint file).

    theta is checked leaf by leaf against the optimizer's own meta-parameter structure, so a
    checkpoint of another optimizer or configuration fails with a clear error.
    """
    from star_core import optimizers  # the registry; imported here to keep import cheap

    if isinstance(path, bytes):
        checkpoint, path = load_checkpoint(path), "checkpoint data"
    else:
        path = resolve_checkpoint_path(path)
        checkpoint = load_checkpoint(path)
    name, config = checkpoint.metadata["optimizer"], checkpoint.metadata["optimizer_config"]
    if name not in optimizers.OPTIMIZERS:
        known = sorted(optimizers.OPTIMIZERS)
        raise ValueError(f"{path}: unknown optimizer {name!r}; known: {known}")
    lopt = optimizers.get(name, **config)
    template = lopt.init_meta_params(jax.random.key(0))
    stored = named_leaves(checkpoint.theta)
    unexpected = sorted(set(stored) - set(named_leaves(template)))
    if unexpected:
        raise ValueError(f"{path}: tensors {unexpected} are not meta-parameters of {name!r}")
    theta = fill_tree(template, stored, source=str(path))
    return lopt, jax.tree_util.tree_map(jax.numpy.asarray, theta), checkpoint.metadata


def load_optimizer(path: str | os.PathLike) -> optax.GradientTransformation:
    """The meta-trained optimizer of a checkpoint as an ``optax.GradientTransformation``.

    Example::

        tx = load_optimizer("run/checkpoints/step_001000.safetensors")
        state = tx.init(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    """
    lopt, theta, _ = load_learned_optimizer(path)
    return lopt.transform(theta)
