"""The guard of the diagnostics that read hidden labels or replace CLIP: miniature world only."""

from ..errors import UserInputError

# Metadata flag that register_miniworld sets: the only datasets these diagnostics may use.
MINIATURE_WORLD_FLAG = "miniature_world"


def check_miniature_world(switch: str, dataset_names, metadata_of) -> None:
    """Refuse the diagnostic ``switch`` (a config key) unless every dataset is the world's."""
    names = list(dataset_names)
    others = [n for n in names if not metadata_of(n).get(MINIATURE_WORLD_FLAG, False)]
    if others or not names:
        raise UserInputError(
            f"{switch} is a miniature-world diagnostic; datasets {names} are not the "
            f"miniature world: set it to False."
        )
