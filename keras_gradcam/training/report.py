"""What ``GuidedTraining.fit`` says at the end when the alignment did not take hold."""

from __future__ import annotations

__all__ = ["FALL", "progress_warning"]

#: The alignment loss must end at most this fraction of its first epoch's value to count as fallen.
FALL = 0.9


def progress_warning(history: dict, weight: float) -> str | None:
    """The warning for a ``fit`` whose alignment did not improve, or None.

    ``history`` is ``History.history`` (per-epoch ``alignment_loss`` and ``evidence_inside``).
    Nothing is said for ``weight == 0``, a single epoch, or when no batch had an annotated
    sample (the alignment loss was 0 every epoch). Otherwise it warns when the last epoch's
    alignment loss is above ``FALL`` times the first's, or the share of the aligned map inside
    the masks (on the annotated images) did not rise, naming both figures and what to try.
    """
    align, inside = history.get("alignment_loss") or [], history.get("evidence_inside") or []
    if weight == 0 or len(align) < 2 or len(inside) != len(align) or not any(a > 0 for a in align):
        return None
    fell = align[-1] <= FALL * align[0]
    rose = inside[-1] > inside[0]
    if fell and rose:
        return None
    what = []
    if not fell:
        what.append(f"the alignment loss went from {align[0]:.3g} to {align[-1]:.3g} (it should fall)")
    if not rose:
        what.append(
            f"the share of the aligned map inside the masks, on the annotated images, went from {inside[0]:.0%} "
            f"to {inside[-1]:.0%} (it should rise)"
        )
    return (
        f"GuidedTraining: over {len(align)} epochs {' and '.join(what)}; the model may still use its shortcut. "
        "Try: more epochs (a shortcut goes only once the alignment loss is low); masks on more images (10 % or "
        "more of them); a larger weight (e.g. twice this one); masks that cover the objects (1 where the evidence "
        "should be, at the images' resolution; look at them with kg.plot); and check the result on images without "
        "the shortcut (see docs/guided-training.md for how)."
    )
