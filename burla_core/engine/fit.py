"""The errors an engine backend's provisioner raises when none of the engine's machines can run
a call: the same wording for Dask and Ray, naming what each machine has and what to do."""

from __future__ import annotations

from ..errors import NoCompatibleNodes, NoNodes
from ..gpus import describe_func_gpu
from ..types import ResourceRequest


def raise_nothing_fits(
    what: str, request: ResourceRequest, refused: list[str], broken: list[str], *, install: str, gpu_hint: str,
    image_hint: str, advice: str,
) -> None:
    """Raise NoNodes when every machine (`what`, e.g. "Dask worker") is `broken` (cannot run
    Burla's code; `install` says what to do), else NoCompatibleNodes listing the `refused` ones
    with hints for the GPU and image asked for and the engine's own `advice`."""
    if broken and not refused:
        raise NoNodes(f"no {what} can run Burla's code: " + "; ".join(broken) + ". " + install)
    hint = ""
    if request.func_gpu is not None:
        hint = f" {describe_func_gpu(request.func_gpu, request.func_gpu_name)} {gpu_hint}"
    if request.image is not None:
        hint += (f" {image_hint} declare the image they run in with BURLA_IMAGE in their environment; none "
                 f"declares {request.image!r}.")
    raise NoCompatibleNodes(
        f"no {what} can run {request.describe()}: " + "; ".join(refused)
        + ("; and these cannot run Burla's code: " + "; ".join(broken) if broken else "") + "."
        + hint + " " + advice
    )
