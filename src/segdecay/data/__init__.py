"""Data sources behind one spec string, so configs and the CLI name a dataset in one option.

Accepted specs: ``synthetic``, ``synthetic:KEY=VAL,...``, ``camvid:PATH`` and ``folder:PATH``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from segdecay.data.base import IGNORE_INDEX, DatasetInfo, SegData, SegSplit
from segdecay.data.cache import CacheWriter, cached, lookup
from segdecay.errors import UserError

__all__ = ["IGNORE_INDEX", "DatasetInfo", "SegData", "SegSplit", "load_dataset",
           "load_dataset_for", "parse_value"]

SPEC_FORMS = "synthetic, synthetic:KEY=VAL,..., camvid:PATH, folder:PATH"


def parse_value(text: str) -> Any:
    """Read ``text`` as int, float or bool where it looks like one, else keep the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _synthetic(
    spec: str, args: str, seed: int, num_classes: int | None, class_names: list[str] | None
) -> SegData:
    """Call ``make_synthetic`` with the ``KEY=VAL`` pairs of the spec (checked by name)."""
    from segdecay.data.synthetic import make_synthetic

    kwargs: dict[str, Any] = {"seed": seed}
    for item in filter(None, (part.strip() for part in args.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(
                f"dataset spec '{spec}': '{item}' is not KEY=VAL; accepted forms: {SPEC_FORMS}"
            )
        kwargs[key.strip()] = parse_value(value.strip())

    params = inspect.signature(make_synthetic).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise UserError(
                f"dataset spec '{spec}': unknown key(s) {', '.join(unknown)}; "
                f"accepted keys: {', '.join(accepted)}"
            )
    _check_synthetic_memory(spec, kwargs, params)
    data = make_synthetic(**kwargs)
    _check_fixed_classes(data, "the synthetic dataset", num_classes, class_names)
    return data


def _check_synthetic_memory(
    spec: str, kwargs: dict[str, Any], params: Any
) -> None:
    """Refuse a synthetic spec whose images would not fit in memory, before generating."""
    from segdecay.resources import cache_bytes, check_cache_fits

    def value(name: str) -> int:
        raw = kwargs.get(name, params[name].default if name in params else 0)
        try:
            return max(0, int(raw))
        except (TypeError, ValueError, OverflowError):
            return 0  # make_synthetic reports bad values itself

    side = value("size")
    n = sum(value(k) for k in ("n_train", "n_val", "n_test"))
    # Generation holds float32 working copies too: count 4x the uint8 cache.
    message = check_cache_fits(4 * n * cache_bytes([(side, side)]), f"dataset spec '{spec}'", n)
    if message:
        raise UserError(message)


def _check_fixed_classes(
    data: SegData, what: str, num_classes: int | None, class_names: list[str] | None
) -> None:
    """Datasets with built-in classes accept the class options only when they agree."""
    n = data.info.num_classes
    if num_classes is not None and num_classes != n:
        raise UserError(f"option num_classes={num_classes} does not match {what}'s {n} classes")
    if class_names is not None:
        if len(class_names) != n:
            raise UserError(
                f"option class_names has {len(class_names)} names but {what} has {n} classes"
            )
        data.info.class_names = [str(c) for c in class_names]


def load_dataset(
    spec: str,
    *,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    problems: list[str] | None = None,
    mask_encoding: str = "auto",
) -> SegData:
    """Load the dataset named by ``spec`` into memory (see the module docstring for forms).

    ``num_classes`` and ``class_names`` matter for ``folder:`` data; for CamVid they may only
    restate its 11 classes (names given are used for display). ``val_fraction`` and ``seed``
    drive the hold-out split of folders without a provided val split.

    With a ``problems`` list, mistakes inside a folder or CamVid dataset are appended to it
    and the bad samples left out (``segdecay check-data``); without one the first raises.
    """
    spec = spec.strip()
    scheme, sep, rest = spec.partition(":")
    scheme = scheme.strip().lower()
    rest = rest.strip()
    if scheme == "synthetic":
        return _synthetic(spec, rest, seed, num_classes, class_names)
    if scheme not in ("camvid", "folder"):
        raise UserError(f"unknown dataset spec '{spec}'; accepted forms: {SPEC_FORMS}")
    if not sep or not rest:
        raise UserError(f"dataset spec '{spec}' gives no path; accepted forms: {SPEC_FORMS}")
    path = Path(rest).expanduser()
    if not path.exists():
        raise UserError(
            f"dataset spec '{spec}': path {path} does not exist; accepted forms: {SPEC_FORMS}"
        )
    if scheme == "folder":
        from segdecay.data.folder import load_folder

        def folder(writer: CacheWriter | None = None) -> SegData:
            return load_folder(path, num_classes=num_classes, class_names=class_names,
                               val_fraction=val_fraction, seed=seed, problems=problems,
                               writer=writer, mask_encoding=mask_encoding)

        if problems is not None:  # check-data always scans every file
            return folder()
        options = {"num_classes": num_classes, "class_names": class_names,
                   "val_fraction": val_fraction, "seed": seed}
        if mask_encoding != "auto":
            # a run's config.yaml records what auto read: share auto's entry when it agrees
            shared = lookup(path.resolve(), "folder", options)
            if shared is not None and shared.info.mask_encoding == mask_encoding:
                return shared
            options["mask_encoding"] = mask_encoding
        return cached(path.resolve(), "folder", options, folder)

    from segdecay.data.camvid import CAMVID_CLASSES, load_camvid

    n = len(CAMVID_CLASSES)
    if num_classes is not None and num_classes != n:  # fail before decoding
        raise UserError(f"option num_classes={num_classes} does not match CamVid's {n} classes")
    if problems is None:
        data = cached(path.resolve(), "camvid", {}, lambda w: load_camvid(path, writer=w))
    else:
        data = load_camvid(path, problems=problems)
    _check_fixed_classes(data, "CamVid", num_classes, class_names)
    return data


def load_dataset_for(config: Any, spec: str | None = None) -> SegData:
    """The dataset a run's config names (``spec`` instead of its own, with the same options).

    One place turns a ``TrainConfig`` into loader options, so train, tune, compare, evaluate
    and spectrum load (and cache) the very same dataset for the same config.
    """
    return load_dataset(spec or config.data, num_classes=config.num_classes,
                        class_names=config.class_names, val_fraction=config.val_fraction,
                        seed=config.seed, mask_encoding=config.mask_encoding)
