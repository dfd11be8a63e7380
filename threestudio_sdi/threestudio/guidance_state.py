"""``sdi-guidance-state``: the guidance's state in any threestudio system's checkpoints, as a mixin.

``sdi-guidance`` keeps a state that its weights do not hold (:meth:`SDIGuidance.state_dict`: the
generator, the fault counter, the anneal clock, the noise field's). A system must save it with each
checkpoint and restore it on resume, or a resumed run restarts the anneal and redraws other noise.
``sdi-ext-system`` does; another system gets it from threestudio's class composition, without changes
to its code: ``system_type: "gaussian-splatting-system:sdi-guidance-state"`` makes
``threestudio.find`` build a class whose bases are (this mixin, the system), so that

* ``on_save_checkpoint`` adds the guidance's state under :data:`GUIDANCE_STATE_KEY`;
* ``on_load_checkpoint`` keeps it until the guidance is ready (Lightning restores a checkpoint before
  ``on_fit_start``);
* ``on_fit_start`` (:meth:`attach_guidance`) tells the guidance the trainer's ``max_steps``, binds its
  noise field (:mod:`.noise_fields`) and then restores the kept state, the field's included.

A system that builds its guidance later (``sdi-ext-system``, at fit start) calls :meth:`attach_guidance`
itself once it has.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .noise_fields import bind_noise_field
from .registry import register

STATE_MIXIN_NAME = "sdi-guidance-state"
GUIDANCE_STATE_KEY = "sdi_guidance_state"
"""Checkpoint key of the guidance's generator state, fault counter and schedule clock (exact resume)."""


def has_own_state(guidance: Any) -> bool:
    """A guidance that is no ``nn.Module`` (whose weights Lightning saves anyway) but has a state_dict.

    ``sdi-guidance`` is one (its generator); duck-typed so that a re-imported class still counts.
    """
    return not isinstance(guidance, torch.nn.Module) and callable(getattr(guidance, "state_dict", None))


@register(STATE_MIXIN_NAME)
class GuidanceStateMixin:
    """Checkpoints of the guidance's state for the system it is mixed into (module docstring)."""

    def trainer_max_steps(self) -> Optional[int]:  # noqa: UP045
        """The attached Lightning trainer's max_steps (None without a trainer or step limit)."""
        trainer = getattr(self, "_trainer", None)
        steps = getattr(trainer, "max_steps", None)
        return int(steps) if isinstance(steps, int) and steps > 0 else None

    def attach_guidance(self) -> None:
        """Run length, noise field, then the kept state (once the guidance exists)."""
        guidance = getattr(self, "guidance", None)
        if guidance is None:
            return
        run_steps = self.trainer_max_steps()
        if run_steps is not None and hasattr(guidance, "run_steps"):
            guidance.run_steps = run_steps
        bind_noise_field(self)
        self.restore_guidance_state()

    def restore_guidance_state(self) -> None:
        pending = getattr(self, "_pending_guidance_state", None)
        guidance = getattr(self, "guidance", None)
        if pending is not None and has_own_state(guidance):
            guidance.load_state_dict(pending)
            self._pending_guidance_state = None

    def on_fit_start(self) -> None:
        super().on_fit_start()  # type: ignore[misc]
        self.attach_guidance()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        guidance = getattr(self, "guidance", None)
        if has_own_state(guidance):
            checkpoint[GUIDANCE_STATE_KEY] = guidance.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        self._pending_guidance_state = checkpoint.get(GUIDANCE_STATE_KEY)
