"""``enqueue_many``'s and ``enqueue_each``'s items, checked: each a mapping of a function,
params and options. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cloudqueue.engine.core.errors import ValidationError
from cloudqueue.engine.core.options import (
    Limits,
    TaskOptions,
    check_function_name,
    check_params,
    parse_options,
)

Item = tuple[str, str, Any, TaskOptions]  # (uniqueId, function, params, options)
MAX_BATCH_ITEMS = 10_000  # items of one bulk enqueue over HTTP


def parse_batch(items: Iterable[Mapping[str, Any]], limits: Limits,
                new_id: Callable[[], str]) -> list[Item]:
    """Every item as ``(uniqueId, function, params, options)``, the uniqueId ``new_id()`` where
    the item gives none. Items that share their options share one parsed ``TaskOptions``.

    Raises:
        ValidationError: the first bad item, its ``index`` set (``item <i>: ...``).
    """
    batch: list[Item] = []
    for item in parse_each(items, limits, new_id):
        if isinstance(item, ValidationError):
            raise item
        batch.append(item)
    return batch


def parse_each(items: Iterable[Mapping[str, Any]], limits: Limits,
               new_id: Callable[[], str]) -> list[Item | ValidationError]:
    """``parse_batch``, item by item: a bad item's ``ValidationError`` (its ``index`` set) in
    its place, the others parsed."""
    none = parse_options({}, wire=False, limits=limits)
    memo: dict[tuple[Any, ...], TaskOptions] = {}  # items tend to share their options
    parsed: list[Item | ValidationError] = []
    for index, item in enumerate(items):
        try:
            if item.__class__ is not dict and not isinstance(item, Mapping):
                raise ValidationError(f"must be a mapping with \"function\", got "
                                      f"{type(item).__name__}", "function")
            function = check_function_name(item.get("function"))
            params = item.get("params")
            if params is None:
                params = {}
            check_params(params)
            options = _item_options(item, memo, limits, none)
        except ValidationError as exc:
            parsed.append(exc.at_item(index))
            continue
        parsed.append((options.unique_id or new_id(), function, params, options))
    return parsed


def _item_options(item: Mapping[str, Any], memo: dict[tuple[Any, ...], TaskOptions],
                  limits: Limits, none: TaskOptions) -> TaskOptions:
    if len(item) == ("function" in item) + ("params" in item):
        return none
    if "unique_id" in item:  # differs per item: nothing to share
        return parse_options({k: v for k, v in item.items()
                              if k != "function" and k != "params"},
                             wire=False, limits=limits)
    try:
        key = tuple([(k, v.__class__, v) for k, v in item.items()
                     if k != "function" and k != "params"])
        found = memo.get(key)
    except TypeError:  # an unhashable option value: parse_options says what is wrong
        key, found = (), None
    if found is None:
        found = parse_options({k: v for k, v in item.items()
                               if k != "function" and k != "params"},
                              wire=False, limits=limits)
        if key:
            memo[key] = found
    return found
