"""Wan2.2-Animate through diffusers' WanAnimatePipeline: the character image performs the pose video.

match.mode=image -> the pipeline's "animate" mode (the character in its own picture);
match.mode=video -> "replace" (the character takes the performer's place in the reference video).

One farm window is one pipeline segment: `render_length` frames (4k+1), the pose, face, background
and mask videos of those frames, a generator seeded with seed + the window's first frame. As
upstream (Wan2.2's animate config and generate.py), windows are chained by default: each continues
from the last `condition_frames` frames of the window before it, at the size they were rendered at,
passed to the model as the pipeline passes its own previous segment; the output is at 30 fps; the
prompt and negative prompt default to upstream's; the VAE runs in float32 whatever the dtype.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from farm.backends.base import BackendSpec, WindowRequest, WindowResult
from farm.backends.wan_animate import inputs
from farm.errors import FarmError
from farm.types import Canvas, Character
from farm.windows import valid_length

DTYPES = ("bf16", "fp16", "fp32")
# The pipeline loaded in this process, by what loading depends on (shots that differ only in steps,
# guidance or size share it).
_PIPELINES: dict[tuple, tuple] = {}
HUB_ID = "org/name"


class WanAnimateBackend:
    """Renders windows with a WanAnimatePipeline loaded once (per worker) from `model`.

    model: a local folder saved by `save_pretrained` (model_index.json) or a hub id; offline
    (local_files_only, or HF_HUB_OFFLINE=1) loads only what is on disk. dtype: bf16, fp16 or fp32;
    device: cuda or cpu; cpu_offload: diffusers' model CPU offload (less GPU memory, slower);
    vae_tiling: decode in tiles (less memory at high resolutions). resolution_area: pixels per
    frame the model renders at; the frames are then resized to the canvas.
    """

    # 30 fps: upstream's preprocessing resamples every driving video to it (preprocess_data.py
    # --fps 30) and its animate config says sample_fps=30. Chained: upstream always continues a
    # segment from the one before; parallel windows (window.mode=parallel) are faster on many GPUs.
    # Every pose part: the pose video draws the hands, the face crops are boxed on the face mesh.
    spec = BackendSpec(name="wan_animate", version="2", window_length=77, window_overlap=8, frame_multiple=4,
                       can_chain=True, condition_frames=1, num_gpus=1, max_side=4096, needs_reference=True,
                       reference_area=1280 * 720, native_fps=30.0, window_mode="chained",
                       pose_parts=("body", "hands", "face"))

    @classmethod
    def spec_for(cls, *, device: str = "auto", condition_frames: int = 1, resolution_area: int = 1280 * 720,
                 **_: object) -> BackendSpec:
        """A worker holds one GPU, unless the model runs on the CPU. For device=auto that is decided
        where the work is planned: a Ray head without a GPU over GPU workers needs device=cuda."""
        return replace(cls.spec, num_gpus=0 if resolve_device(device) == "cpu" else 1, condition_frames=condition_frames,
                       reference_area=resolution_area)

    def __init__(self, *, model: str = "", revision: str | None = None, local_files_only: bool | None = None,
                 dtype: str = "bf16", device: str = "auto", cpu_offload: bool = False, vae_tiling: bool = False,
                 resolution_area: int = 1280 * 720, steps: int = 20, guidance: float = 1.0, negative_prompt: str = "",
                 condition_frames: int = 1) -> None:
        if condition_frames not in (1, 5):
            raise FarmError("config backend.condition_frames", f"is {condition_frames}; the pipeline takes 1 or 5",
                            "use 1 or 5")
        device = resolve_device(device)
        self.spec = self.spec_for(device=device, condition_frames=condition_frames, resolution_area=resolution_area)
        self.device = device
        self.options = {"steps": steps, "guidance": guidance, "negative_prompt": negative_prompt,
                        "resolution_area": resolution_area}
        self.pipe, self.identity = load_pipeline(model, revision=revision, local_files_only=local_files_only,
                                                 dtype=dtype, device=device, cpu_offload=cpu_offload, vae_tiling=vae_tiling)
        self._character: Character | None = None
        self._canvas: Canvas | None = None

    def describe(self) -> dict:
        """What the manifest records of the model: id, revision or content hash, dtype, device."""
        return dict(self.identity)

    def prepare(self, character: Character, canvas: Canvas) -> None:
        self._character, self._canvas = character, canvas

    def render_window(self, request: WindowRequest) -> WindowResult:
        import torch
        from PIL import Image

        if self._character is None or self._canvas is None:
            raise RuntimeError("WanAnimateBackend.render_window called before prepare")
        if request.reference is None or request.driving is None:
            raise RuntimeError("WanAnimateBackend needs the reference frames and driving pose of each window")
        canvas, driving, n = self._canvas, request.driving, request.end - request.start
        # 4k+1 frames, and more than twice the conditioning frames (else the pipeline splits the
        # window into segments it cannot count: 5 frames at least for 1, 13 for 5).
        rule = self.spec.frame_multiple
        length = max(valid_length(n, rule), valid_length(2 * self.spec.condition_frames + 1, rule))
        width, height = inputs.render_size(canvas.width, canvas.height, self.options["resolution_area"])
        mode = "replace" if canvas.mode == "video" else "animate"

        # 1. The conditioning videos, `length` frames (the last repeated when the rule asks for more)
        take = np.minimum(np.arange(length), n - 1)
        body, hands = inputs.transfer_pose(request.targets, request.driving)
        sx, sy = width / canvas.width, height / canvas.height
        for points in (body, hands):
            points[..., 0] *= sx
            points[..., 1] *= sy
        pose = [inputs.draw_pose(width, height, body[t], hands[t]) for t in take]
        face_size = int(self.pipe.transformer.config.motion_encoder_size)
        reference = request.reference  # (shrunk to the render area as it was decoded)
        boxes = inputs.face_boxes(driving, (reference.shape[2], reference.shape[1]))[take]
        faces = inputs.face_crops(reference[take], boxes, face_size)
        extra = {}
        if mode == "replace":
            masks = inputs.person_masks(reference, driving)[take]
            if not masks.any():
                raise FarmError(f"window {request.start}-{request.end - 1}",
                                "replace mode (match.mode=video) found no person in the reference frames to replace",
                                "use match.mode=image, or a motion video with a performer in these frames")
            background = reference[take] * ~masks[..., None]  # the performer's region black, as upstream
            extra["background_video"] = [Image.fromarray(f).resize((width, height), Image.BILINEAR) for f in background]
            extra["mask_video"] = [Image.fromarray(m.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)
                                   for m in masks]

        # 2. One pipeline segment, seeded by the window's place in the shot
        generator = torch.Generator(device="cpu").manual_seed(int(request.seed) + int(request.start))
        condition = self.spec.condition_frames
        self.pipe.farm_previous = None if request.previous is None else _frames_tensor(request.previous, width, height)
        prompts = {"prompt": request.prompt or inputs.DEFAULT_PROMPT,
                   "negative_prompt": self.options["negative_prompt"] or inputs.DEFAULT_NEGATIVE_PROMPT}
        # The reference image as upstream gives it to the VAE and to CLIP: padded to the render size.
        image = Image.fromarray(inputs.pad_to(self._character.image, width, height))
        # On the CPU, one thread: float sums add up in one order, so a window does not change with
        # the machine's core count (up to the rare value another process rounds differently).
        threads = torch.get_num_threads()
        if self.device == "cpu":
            torch.set_num_threads(1)
        try:
            out = self.pipe(
                image=image, pose_video=[Image.fromarray(f) for f in pose],
                face_video=[Image.fromarray(f) for f in faces], prompt=prompts["prompt"],
                negative_prompt=prompts["negative_prompt"], height=height, width=width,
                segment_frame_length=length, num_inference_steps=self.options["steps"], mode=mode,
                prev_segment_conditioning_frames=condition, guidance_scale=self.options["guidance"],
                generator=generator, output_type="np", **extra,
            ).frames[0]
        finally:
            self.pipe.farm_previous = None
            torch.set_num_threads(threads)

        # 3. Back to the canvas; the frames the next window continues from stay at the render size,
        #    as the pipeline keeps its own segments' frames (a round trip through a 512 px canvas
        #    would blur what the next window starts from).
        import cv2

        rendered = np.clip(np.rint(np.asarray(out, np.float32) * 255.0), 0, 255).astype(np.uint8)[:n]
        handoff = None
        if request.handoff_at is not None:
            handoff = rendered[request.handoff_at : request.handoff_at + condition].copy()
        frames = np.stack([cv2.resize(f, (canvas.width, canvas.height), interpolation=cv2.INTER_AREA) for f in rendered])
        return WindowResult(frames=frames, handoff=handoff, prompts=prompts)


def resolve_device(device: str) -> str:
    """auto -> cuda when torch sees a CUDA GPU here, else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _frames_tensor(frames: np.ndarray, width: int, height: int):
    """(k, H, W, 3) uint8 -> (1, 3, k, height, width) float in [-1, 1], as the pipeline keeps its
    frames; resized only when they come at another size (canvas-size frames of an old checkpoint)."""
    import cv2
    import torch

    if frames.shape[1:3] != (height, width):
        frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1.0)
    return tensor.permute(3, 0, 1, 2).unsqueeze(0)


def _pipeline_class():
    from diffusers import WanAnimatePipeline

    class FarmWanAnimatePipeline(WanAnimatePipeline):
        """WanAnimatePipeline that may start its first segment from given frames (`farm_previous`)
        instead of none: how a farm window continues the window before it in its chain, the same
        conditioning the pipeline gives its own later segments; and that makes the reference
        image's CLIP features as upstream does."""

        farm_previous = None

        def encode_image(self, image, device=None):
            """CLIP features of the reference image as upstream makes them (wan/modules/animate/clip.py,
            visual): the padded image squashed to the encoder's input size (bicubic, no antialias),
            then normalised. The processor's own resize and centre crop would cut off the head and
            feet of a tall character."""
            import torch
            import torch.nn.functional as F
            from diffusers.utils.torch_utils import get_module_execution_device

            encoder_device = get_module_execution_device(self.image_encoder)
            pixels = torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)[None]
            side = self.image_encoder.config.image_size
            pixels = F.interpolate(pixels, size=(side, side), mode="bicubic", align_corners=False)
            mean = torch.tensor(self.image_processor.image_mean).view(1, 3, 1, 1)
            std = torch.tensor(self.image_processor.image_std).view(1, 3, 1, 1)
            pixels = ((pixels - mean) / std).to(encoder_device, self.image_encoder.dtype)
            hidden = self.image_encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
            return hidden.to(device or self._execution_device)

        def prepare_prev_segment_cond_latents(self, prev_segment_cond_video=None, *args, **kwargs):
            if prev_segment_cond_video is None and self.farm_previous is not None:
                prev_segment_cond_video = self.farm_previous.to(self._execution_device)
                # The pipeline marks the conditioning frames as given only past its first segment
                # (start_frame > 0); a farm window is a later segment of its chain.
                kwargs["start_frame"] = max(kwargs.get("start_frame", 0), 1)
            return super().prepare_prev_segment_cond_latents(prev_segment_cond_video, *args, **kwargs)

    return FarmWanAnimatePipeline


def load_pipeline(model: str, *, revision: str | None, local_files_only: bool | None, dtype: str, device: str,
                  cpu_offload: bool, vae_tiling: bool):
    """The pipeline on its device, and what identifies the weights: {"model", "revision" or
    "sha256", "dtype", "device"}. Every failure is a FarmError naming backend.model."""
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # Their per-call notes (reshaping inputs) and load progress bars would drown the farm's own.
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    if dtype not in DTYPES:
        raise FarmError("config backend.dtype", f"is {dtype!r}", f"use one of {', '.join(DTYPES)}")
    if not model:
        raise FarmError("config backend.model", "is empty", "give a local diffusers folder or a hub id (backend.model=...)")
    if device == "cuda" and not torch.cuda.is_available():
        raise FarmError("config backend.device", "is cuda and this machine has no CUDA GPU",
                        "use backend.device=cpu (slow) or a GPU worker")
    offline = local_files_only if local_files_only is not None else os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false")
    folder = Path(model).expanduser()
    if folder.exists() and not (folder / "model_index.json").is_file():
        raise FarmError("config backend.model", f"{model} has no model_index.json",
                        "point it at a folder written by save_pretrained (a diffusers WanAnimatePipeline)")
    if not folder.exists() and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise FarmError("config backend.model", f"{model} is not a folder here and not a hub id ({HUB_ID})",
                        "check the path, or give a hub id such as Wan-AI/Wan2.2-Animate-14B-Diffusers")
    key = (model, revision, offline, dtype, device, cpu_offload, vae_tiling)
    if key in _PIPELINES:
        return _PIPELINES[key]
    _PIPELINES.clear()  # one model per worker: a different one replaces it
    if device == "cuda":
        torch.cuda.empty_cache()
    try:
        pipe = _pipeline_class().from_pretrained(
            str(folder) if folder.exists() else model, revision=revision, dtype=component_dtypes(dtype),
            local_files_only=offline or folder.exists(),
        )
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FarmError("config backend.model", f"{model} could not be loaded: {first}",
                        "check that it is a diffusers WanAnimatePipeline; offline, the hub id must be in the cache") from None
    if cpu_offload and device == "cuda":
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(device)
    if vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    identity = {"model": model, "dtype": dtype, "device": device}
    if folder.exists():
        identity["sha256"] = folder_hash(folder)
    else:
        identity["revision"] = revision or _snapshot_revision(pipe) or "main"
    _PIPELINES[key] = pipe, identity
    return pipe, identity


def component_dtypes(dtype: str) -> dict:
    """The torch dtype of each component for backend.dtype: the transformer (and the image
    encoder) in that dtype; the VAE in float32, as upstream and diffusers' example run it (its
    decode is where low precision shows, as banding and colour shifts); the UMT5 text encoder in
    bfloat16 for fp16, as upstream keeps it (t5_dtype), since UMT5's activations overflow float16."""
    import torch

    chosen = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    text = torch.bfloat16 if chosen == torch.float16 else chosen
    return {"default": chosen, "vae": torch.float32, "text_encoder": text}


def folder_hash(folder: Path) -> str:
    """sha256 over every file of the folder (relative path and content), in path order.

    Reading ~82 GB of weights at every worker start costs minutes, so the hash is kept in a small
    JSON file (~/.cache/motion-farm/folder-hashes.json) under the folder's identity: its resolved
    path and the relative path, size and modification time (ns) of each of its files. A file that
    is replaced or rewritten changes that identity and is hashed again, as make and rsync judge a
    file changed. A cache that cannot be read or written is only slower."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    cache = Path.home() / ".cache" / "motion-farm" / "folder-hashes.json"
    known = _read_hashes(cache)
    key = _folder_identity(folder, files)  # hidden files (the hub's download metadata) are not the weights
    if key not in known:
        known[key] = _content_hash(folder, files)
        _write_hashes(cache, known)
    return known[key]


def _folder_identity(folder: Path, files: list[Path]) -> str:
    identity = [str(folder.resolve())]
    for path in files:
        stat = path.stat()
        identity.append(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\0".join(identity).encode()).hexdigest()


def _content_hash(folder: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


_KEPT_HASHES = 64  # folders remembered; the oldest entries go first


def _read_hashes(cache: Path) -> dict[str, str]:
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _write_hashes(cache: Path, known: dict[str, str]) -> None:
    """Write the cache whole or not at all (workers starting side by side may both write it)."""
    kept = dict(list(known.items())[-_KEPT_HASHES:])
    partial = cache.with_name(f".{cache.name}.{os.getpid()}")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(kept))
        os.replace(partial, cache)
    except OSError:
        partial.unlink(missing_ok=True)


def _snapshot_revision(pipe) -> str | None:
    """The commit of a hub snapshot the pipeline came from (.../snapshots/<commit>/)."""
    path = getattr(pipe, "name_or_path", "") or getattr(pipe.config, "_name_or_path", "")
    parts = Path(str(path)).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts and parts.index("snapshots") + 1 < len(parts) else None


