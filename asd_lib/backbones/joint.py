"""Both microphones in one BEATs sequence: the kit's joint-channel encoder input.

This is an experiment of this kit, beyond the paper and the authors' code. The paper says that attention learns the
time-of-arrival difference between the two microphones, but in the authors' code (and in the kit's default,
``channel_input='separate'``) each channel enters the encoder alone as a mono sample, so attention never sees both
microphones at once and the claim cannot be tested. Here both channels' patch tokens share one sequence:

- each channel's patch tokens (``BEATsEncoder.patch_tokens``, token index t * F + f with F = 8 for 128 mel bins)
  get a learned channel embedding added: a (2, D) parameter initialised from N(0, ``init_std``^2) (0.02, the scale
  transformers commonly use for new learned embeddings: small next to the LayerNorm-ed patch features of unit scale)
  drawn from a ``torch.Generator`` seeded with ``seed``, so that the same seed gives the same start;
- the two channels are interleaved per patch time: for each time t the F tokens of ch0, then the F tokens of ch1,
  i.e. joint index t * 2F + c * F + f. BEATs has no absolute positions, only the positional conv and the relative
  position bias over the flattened index, so this order keeps tokens of the same moment close in relative position:
  the same band of the other microphone at the same time is F tokens away, nearer than the next time step of the
  same microphone (2F). Concatenating the channels instead would put them N tokens apart, where the bias buckets
  are coarse and the 128-tap positional conv never reaches;
- the joint sequence (B, 2N, D) runs through the encoder's positional conv and Transformer (``encoder.encoder``).

Only BEATs is supported: EAT/SSLAM prepends a CLS token and adds fixed 2-D (time, frequency) sin-cos positions, so a
joint sequence would need a positional scheme of its own.

The tokens carry no phase: fbank frames are 10 ms apart and a patch spans 16 frames (160 ms), so a time-of-arrival
difference shorter than a frame (10 ms is 3.4 m of path difference) cannot appear as an offset between tokens. What
attention can compare is the two microphones' spectra at the same moment (levels, spectral colouring, which events
reach both), which is what this input makes testable.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from asd_lib.artifacts import head_beside

__all__ = ["JointChannelEncoder", "CHANNEL_EMBEDDING_KEY", "load_joint_encoder"]

CHANNEL_EMBEDDING_KEY = "channel_embedding"  # key of the (2, D) tensor in ``epoch_XXX.head.pt``


class JointChannelEncoder(nn.Module):
    """A BEATs encoder that reads both channels as one token sequence (see the module docstring).

    ``forward(fbank0, fbank1)``: normalised fbanks (B, frames, 128) of ch0 and ch1 -> tokens (B, 2N, D) in the
    interleaved order t * 2F + c * F + f. ``forward_fbank`` takes them stacked (B, 2, frames, 128) and
    ``extract_features`` takes a stereo waveform (B, 2, T).
    """

    kind = "beats"

    def __init__(self, encoder: nn.Module, seed: int = 0, init_std: float = 0.02) -> None:
        super().__init__()
        kind = getattr(encoder, "kind", None)
        if kind != "beats":
            raise ValueError(f"channel_input='joint' needs a BEATs encoder, got {kind!r}: EAT/SSLAM has a CLS token "
                             "and fixed 2-D (time, frequency) positions, which a joint sequence of both channels "
                             "does not fit. Use a BEATs backbone, or channel_input='separate'")
        self.backbone = encoder
        gen = torch.Generator().manual_seed(int(seed))
        init = torch.randn(2, int(encoder.embed_dim), generator=gen) * float(init_std)
        self.channel_embedding = nn.Parameter(init.to(next(encoder.parameters()).device))

    @property
    def embed_dim(self) -> int:
        """Token width D."""
        return int(self.backbone.embed_dim)

    @property
    def recipe(self) -> str:
        """The backbone's fbank recipe."""
        return self.backbone.recipe

    def forward(self, fbank0: torch.Tensor, fbank1: torch.Tensor) -> torch.Tensor:
        """Normalised fbanks (B, frames, 128) of ch0 and ch1 -> joint tokens (B, 2N, D), interleaved per time."""
        if fbank0.shape != fbank1.shape:
            raise ValueError(f"both channels need fbanks of one shape, got {tuple(fbank0.shape)} and "
                             f"{tuple(fbank1.shape)}")
        b = fbank0.shape[0]
        bands = fbank0.shape[-1] // int(self.backbone.cfg["input_patch_size"])
        tokens = self.backbone.patch_tokens(torch.cat([fbank0, fbank1]))  # (2B, N, D)
        tokens = tokens.reshape(2, b, -1, bands, tokens.shape[-1])  # (channel, B, T', F, D)
        tokens = tokens + self.channel_embedding.to(tokens.dtype)[:, None, None, None, :]
        joint = tokens.permute(1, 2, 0, 3, 4).reshape(b, -1, tokens.shape[-1])  # index t * 2F + c * F + f
        return self.backbone.encoder(joint)

    def forward_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        """Stacked normalised fbanks (B, 2, frames, 128) -> joint tokens (B, 2N, D)."""
        if fbank.dim() != 4 or fbank.shape[1] != 2:
            raise ValueError(f"expected fbank of shape (B, 2, frames, 128), got {tuple(fbank.shape)}")
        return self(fbank[:, 0], fbank[:, 1])

    def preprocess(self, wave: torch.Tensor) -> torch.Tensor:
        """Stereo wave (B, 2, T) -> normalised fbanks (B, 2, frames, 128) with the backbone's recipe."""
        wave = torch.as_tensor(wave)
        if wave.dim() != 3 or wave.shape[1] != 2:
            raise ValueError(f"expected a stereo wave of shape (B, 2, T), got {tuple(wave.shape)}")
        fb = self.backbone.preprocess(wave.reshape(-1, wave.shape[-1]))
        return fb.reshape(wave.shape[0], 2, *fb.shape[1:])

    def extract_features(self, wave: torch.Tensor) -> torch.Tensor:
        """Stereo wave (B, 2, T) -> joint tokens (B, 2N, D)."""
        return self.forward_fbank(self.preprocess(wave))

    def head_entries(self) -> dict:
        """What ``epoch_XXX.head.pt`` stores for a joint run: the channel input and the channel embedding (CPU)."""
        return {"channel_input": "joint", CHANNEL_EMBEDDING_KEY: self.channel_embedding.detach().cpu().clone()}

    def load_channel_embedding(self, value: torch.Tensor) -> None:
        """Copy a saved (2, D) channel embedding into the parameter."""
        if tuple(value.shape) != tuple(self.channel_embedding.shape):
            raise ValueError(f"channel embedding of shape {tuple(value.shape)} does not fit this encoder "
                             f"{tuple(self.channel_embedding.shape)}")
        with torch.no_grad():
            self.channel_embedding.copy_(value)


def load_joint_encoder(checkpoint: str | Path, recipe: str | None = None) -> JointChannelEncoder:
    """A joint-channel encoder (eval mode) from ``epoch_XXX.pt`` and the channel embedding in its head file."""
    from asd_lib.backbones import load_backbone

    head = head_beside(checkpoint)
    if not head.is_file():
        raise FileNotFoundError(f"{checkpoint}: channel 'joint' needs the channel embedding in {head.name} next to "
                                "it, which fine-tuning with channel_input='joint' writes; it is not there")
    blob = torch.load(head, map_location="cpu", weights_only=True)
    trained_as = blob.get("channel_input", "separate")
    if trained_as != "joint" or CHANNEL_EMBEDDING_KEY not in blob:
        raise ValueError(f"{checkpoint} was fine-tuned with channel_input={trained_as!r}: channel 'joint' needs a "
                         "checkpoint fine-tuned with channel_input='joint' (asd-finetune --channel-input joint); "
                         "use channel ch0, ch1 or both for this one")
    model = JointChannelEncoder(load_backbone(str(checkpoint), recipe=recipe))
    model.load_channel_embedding(blob[CHANNEL_EMBEDDING_KEY])
    return model.eval()
