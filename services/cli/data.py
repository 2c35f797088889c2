"""``star data``: see which datasets are ready, build text corpora, prepare the paper's datasets.

- ``star data list``: every dataset, the tasks that read it, and whether it is ready;
- ``star data build-text --name NAME FILE...``: a byte-level text corpus from text files, for
  ``star_core.tasks.get("text_lstm", dataset=NAME)``;
- ``star data prepare NAME``: build an embedded dataset, or download and convert a paper dataset
  to array_record (needs network access and TensorFlow, see docs/tasks.md).

A person runs these, so builds here show tfds's progress bars (library code builds quietly).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="list, build and prepare the tasks' datasets")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    listing = commands.add_parser(
        "list", help="show each dataset, its tasks and whether it is ready"
    )
    _add_data_dir(listing)
    listing.set_defaults(handler=list_datasets)

    build = commands.add_parser("build-text", help="build a text corpus from UTF-8 text files")
    build.add_argument("--name", required=True, help="corpus name ([a-z][a-z0-9_]*)")
    build.add_argument(
        "files", nargs="+", metavar="FILE", help="text files, paragraphs = documents"
    )
    _add_data_dir(build)
    build.set_defaults(handler=build_text)

    prepare = commands.add_parser("prepare", help="build or download a dataset as array_record")
    prepare.add_argument("name", help="dataset name, as shown by `star data list`")
    _add_data_dir(prepare)
    prepare.set_defaults(handler=prepare_dataset)


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data directory (default: $TFDS_DATA_DIR, else ~/.cache/star/tensorflow_datasets)",
    )


def _tasks_by_dataset() -> dict[str, list[str]]:
    from star_core.tasks import TASKS
    from star_core.tasks.data import store

    users: dict[str, list[str]] = {}
    for name, task in TASKS.items():
        dataset = getattr(task, "dataset", None)
        if dataset is None:
            continue
        # A dataset name outside the catalog is a text corpus (text.check_corpus_name).
        users.setdefault(dataset if dataset in store.DATASETS else "text", []).append(name)
    return users


def list_datasets(args: argparse.Namespace) -> int:
    from star_core.tasks.data import store, text

    root = store.resolve_data_dir(args.data_dir)
    users = _tasks_by_dataset()
    print(f"data directory: {root}")
    print(f"{'dataset':<14}{'kind':<10}{'ready':<7}{'tasks':<36}how to get it")
    for name, spec in store.DATASETS.items():
        if name == "text":
            folders = (root / spec.tfds_name).glob("*")
            corpora = sorted(p.name for p in folders if store.built_versions(p))
            ready = "yes" if corpora else "on use"
            how = f"{text.DEFAULT_CORPUS} built on first use; star data build-text --name NAME FILE"
        elif spec.embedded:
            ready = "yes" if store.is_prepared(name, root) else "on use"
            how = "built on first use, offline"
        else:
            ready = "yes" if store.is_prepared(name, root) else "no"
            how = f"star data prepare {name}"
        tasks = ", ".join(users.get(name, [])) or "-"
        kind = "embedded" if spec.embedded else "prepared"
        print(f"{name:<14}{kind:<10}{ready:<7}{tasks:<36}{how}")
        if name == "text" and corpora:
            print(f"{'':<14}corpora built: {', '.join(corpora)}")
    return 0


def build_text(args: argparse.Namespace) -> int:
    from star_core.tasks.data import text

    text.build_text(args.name, args.files, args.data_dir, progress=True)
    train = text.load_documents(args.name, "train", args.data_dir)
    test = text.load_documents(args.name, "test", args.data_dir)
    print(
        f"built text corpus {args.name!r}: {len(train)} train / {len(test)} test documents in "
        f"{text.corpus_dir(args.name, args.data_dir)}; use "
        f'star_core.tasks.get("text_lstm", dataset="{args.name}")'
    )
    return 0


def prepare_dataset(args: argparse.Namespace) -> int:
    from star_core.tasks.data import ensure, store

    spec = store.dataset_spec(args.name)
    root = store.resolve_data_dir(args.data_dir)
    if spec.embedded:
        ensure.ensure_dataset(args.name, root, progress=True)
    else:
        _download_and_prepare(spec, root)
    print(f"dataset {args.name!r} is ready in {root}")
    return 0


def _download_and_prepare(spec, root) -> None:
    missing = [m for m in ("tensorflow", "importlib_resources") if not importlib.util.find_spec(m)]
    if missing:
        from star_core.tasks.data import store

        raise ValueError(
            f"preparing {spec.name!r} needs {', '.join(missing)}: run `{store.PREPARE_INSTALL}` "
            "(and network access), then `star data prepare " + spec.name + "`"
        )
    import tensorflow_datasets as tfds

    logger.info("downloading and converting %s to %s", spec.tfds_name, root)
    builder = tfds.builder(spec.tfds_name, data_dir=str(root), file_format="array_record")
    builder.download_and_prepare()
