"""engine/_native_segment.c: segment_text with the default GSM tables (see engine/segment.py)."""

from collections.abc import Callable, Iterable

from engine.segment import Segmentation

def configure(
    default_characters: str,
    extension_characters: str,
    capacities: tuple[int, int, int, int, int, int],
    starter_ranges: Iterable[tuple[int, int]],
    joins_following: str,
    segmentation_type: type[Segmentation],
    cluster_edge: Callable[[str, int, int], int],
    /,
) -> None: ...
def split_default_tables(
    text: str, concat_ref: int, reference: int, grapheme: bool, smart_replaced: int, /
) -> Segmentation | None: ...
