"""The ``star.v1.JobSpec`` a client sends, from whatever the caller holds.

:func:`job_spec` takes

- a ``JobSpec`` proto (sent as it is);
- a ``services.domain.TrainingSpec`` (converted with ``services.api.convert.spec_to_proto``;
  this imports JAX);
- a mapping in the proto's JSON form (snake_case or camelCase field names);
- the path of a spec file holding that mapping: JSON (``.json``) or YAML (any other name)::

      tasks: [digits_mlp]
      optimizer: {kind: star, constants: {beta3: 1.0e-5}}
      estimator: {kind: pes, horizon: 200, truncation_length: 20}
      outer_steps: 100
      num_workers: 2

An unknown field, or a value of the wrong shape, is a ``ValueError`` naming its path
(``estimator.sigmaa``) before anything is sent. Fields left out stay unset and the server fills
in the library defaults (``Job.spec`` shows what a job runs). ``star submit`` reads its
SPEC_FILE with the same functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.generated.star.v1 import job_pb2


def load_spec_file(path: Path) -> dict[str, Any]:
    """The mapping in a JSON (``.json``) or YAML (any other name) file."""
    import yaml

    path = Path(path)
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ValueError(f"{path}: not valid {kind}: {' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: a JobSpec must be a mapping of field names, got {type(data).__name__}"
        )
    return data


def _field(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    return descriptor.fields_by_name.get(key) or next(
        (f for f in descriptor.fields if f.json_name == key), None
    )


def check_fields(data: Mapping[str, Any], descriptor: Descriptor, path: str = "") -> None:
    """ValueError naming the path of the first unknown field, or of a message or list field
    whose value has the wrong shape (values themselves are checked by json_format)."""
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        field = _field(descriptor, str(key))
        if field is None:
            allowed = ", ".join(f.name for f in descriptor.fields)
            raise ValueError(f"unknown field {where!r} (fields here: {allowed})")
        repeated = field.is_repeated
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map or (repeated and field.message_type is None):
            kind = dict if is_map else list
            if not isinstance(value, kind):
                raise ValueError(f"{where} must be a {'mapping' if is_map else 'list'}")
        elif field.message_type is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{where} must be a mapping")
            check_fields(value, field.message_type, where)


def spec_from_dict(data: Mapping[str, Any], source: str = "spec") -> job_pb2.JobSpec:
    """The JobSpec of a proto-JSON mapping; ValueError ``"SOURCE: ..."`` naming the field."""
    spec = job_pb2.JobSpec()
    try:
        # types-protobuf types DESCRIPTOR as either descriptor class; at run time with the upb
        # backend google.protobuf.descriptor.Descriptor is upb's
        check_fields(data, spec.DESCRIPTOR)  # type: ignore[arg-type]
        json_format.ParseDict(dict(data), spec)
    except (ValueError, json_format.ParseError) as err:
        raise ValueError(f"{source}: {' '.join(str(err).split())}") from None
    return spec


def job_spec(spec: Any) -> job_pb2.JobSpec:
    """The JobSpec of ``spec`` (see the module docstring); TypeError for anything else."""
    if isinstance(spec, job_pb2.JobSpec):
        return spec
    if isinstance(spec, Mapping):
        return spec_from_dict(spec)
    if isinstance(spec, str | os.PathLike):
        return spec_from_dict(load_spec_file(Path(spec)), str(spec))
    from services.domain import TrainingSpec

    if isinstance(spec, TrainingSpec):
        from services.api.convert import spec_to_proto

        return spec_to_proto(spec)
    raise TypeError(
        "spec must be a JobSpec, a TrainingSpec, a mapping or the path of a JSON/YAML file,"
        f" got {type(spec).__name__}"
    )
