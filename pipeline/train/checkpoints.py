"""Checkpoints: the training state after each finished epoch, so a killed fit resumes where it was."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch


class Checkpoints:
    """The training state after each finished epoch, in `folder/checkpoint.pt` (written to a
    temporary name and renamed: a kill leaves the previous epoch's). Loaded with weights_only=True.

    Holds everything the next epoch depends on: weights and buffers, optimizer state, the numpy and
    torch generators, the history, the best epoch so far (and its weights) and the patience count,
    so a resumed run ends with the weights an uninterrupted one would have, bit for bit."""

    def __init__(self, folder: Path | None):
        self.folder = folder

    @property
    def path(self) -> Path | None:
        return None if self.folder is None else self.folder / "checkpoint.pt"

    def save(self, state: dict) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".checkpoint.{os.getpid()}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.folder / "checkpoint.pt")

    def load(self, device: torch.device) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            return torch.load(self.path, map_location=device, weights_only=True)
        except Exception as exc:  # unreadable: train from the start rather than trust it
            sys.stderr.write(f"  checkpoint {self.path} is unreadable ({type(exc).__name__}); training from epoch 1\n")
            return None


def rng_state(rng: np.random.Generator, device: torch.device) -> dict:
    state = {"numpy": json.dumps(rng.bit_generator.state), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(rng: np.random.Generator, state: dict, device: torch.device) -> None:
    rng.bit_generator.state = json.loads(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
