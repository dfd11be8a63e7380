"""STAND-IN: a prompt-processor output with threestudio's embedding layouts and simplified views.

Views: overhead if elevation > 60°, else front if |azimuth| < 45°, back if |azimuth| > 135°, else side.
Perp-Neg: the positive is the view's embedding, the negatives are the other two horizontal views
with fixed weights (−1, −0.5) (−0 for overhead); the layout is threestudio's:
[positives B; unconditionals B; negatives 2B with sample b's at rows 2b, 2b + 1], weights [B, 2].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

DIRECTIONS = ("side", "front", "back", "overhead")


@dataclass
class PromptProcessorOutput:
    text_embeddings: Tensor  # [1, L, D]
    uncond_text_embeddings: Tensor  # [1, L, D]
    text_embeddings_vd: Tensor  # [4, L, D] in the order of DIRECTIONS
    uncond_text_embeddings_vd: Tensor  # [4, L, D]
    use_perp_neg: bool = False
    prompt: str = ""  # the processed prompt, as threestudio's output carries it

    def direction_index(self, elevation: Tensor, azimuth: Tensor) -> Tensor:
        azimuth = (azimuth + 180) % 360 - 180
        index = torch.zeros_like(elevation, dtype=torch.long)
        index[azimuth.abs() < 45] = 1
        index[azimuth.abs() > 135] = 2
        index[elevation > 60] = 3
        return index

    def get_text_embeddings(
        self,
        elevation: Tensor,
        azimuth: Tensor,
        camera_distances: Tensor,
        view_dependent_prompting: bool = True,
    ) -> Tensor:
        batch = elevation.shape[0]
        if view_dependent_prompting:
            index = self.direction_index(elevation, azimuth)
            cond = self.text_embeddings_vd[index]
            uncond = self.uncond_text_embeddings_vd[index]
        else:
            cond = self.text_embeddings.expand(batch, -1, -1)
            uncond = self.uncond_text_embeddings.expand(batch, -1, -1)
        return torch.cat([cond, uncond], dim=0)

    def get_text_embeddings_perp_neg(
        self,
        elevation: Tensor,
        azimuth: Tensor,
        camera_distances: Tensor,
        view_dependent_prompting: bool = True,
    ) -> tuple[Tensor, Tensor]:
        assert view_dependent_prompting, "Perp-Neg only works with view-dependent prompting"
        index = self.direction_index(elevation, azimuth)
        positives, unconds, negatives, weights = [], [], [], []
        others = {0: (1, 2), 1: (0, 2), 2: (0, 1), 3: (3, 3)}
        for view in index.tolist():
            positives.append(self.text_embeddings_vd[view])
            unconds.append(self.uncond_text_embeddings_vd[view])
            first, second = others[view]
            negatives += [self.text_embeddings_vd[first], self.text_embeddings_vd[second]]
            weights += [0.0, 0.0] if view == 3 else [-1.0, -0.5]
        embeddings = torch.cat([torch.stack(positives), torch.stack(unconds), torch.stack(negatives)])
        return embeddings, torch.tensor(weights, device=elevation.device).reshape(-1, 2)
