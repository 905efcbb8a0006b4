"""Processors of video-capable MLLMs, loaded without their video processor.

Qwen2.5-VL, Qwen3-VL, InternVL, LLaVA-OneVision and SmolVLM processors take a video processor besides
the image processor and tokenizer. In transformers 5 every video processor is a torchvision backend
(`BaseVideoProcessor` and `AutoVideoProcessor` require it), so without torchvision these processors
can neither be built nor loaded, although images never touch the video path. `image_only(cls)` is the
same processor class with the video processor left out of its components: it loads the checkpoint's
image processor (the PIL backend where torchvision is absent), tokenizer and chat template, renders
and tokenizes exactly as the full processor does for images, and saves under the real class name.
"""

from __future__ import annotations

import types
from functools import cache
from typing import Any, ClassVar

from harness.core.errors import UserError
from models.base import FGVRModel

NO_VIDEO_PROCESSOR = types.SimpleNamespace(num_frames=None, fps=None)


def _is_video(attribute: str) -> bool:
    return "video" in attribute


def _video_optional(init):
    """`init` (a processor's __init__) with video_processor defaulting to None where it is required
    (SmolVLM). A copy of the same code, since from_pretrained reads the argument names off __code__."""
    code = init.__code__
    names = code.co_varnames[1 : code.co_argcount]  # less self
    defaults = init.__defaults__ or ()
    first_default = len(names) - len(defaults)
    if "video_processor" not in names or names.index("video_processor") >= first_default:
        return init
    missing = first_default - names.index("video_processor")
    copy = types.FunctionType(
        code, init.__globals__, init.__name__, (None,) * missing + defaults, init.__closure__
    )
    copy.__kwdefaults__, copy.__qualname__ = init.__kwdefaults__, init.__qualname__
    return copy


@cache
def image_only(processor_class: type) -> type:
    """`processor_class` without its video processor (same name, so saved configs name the real class)."""

    class ImageOnly(processor_class):
        # The parent's __init__ hands video_processor=None on to ProcessorMixin, which zips its
        # arguments with get_attributes(): the video slot, last, falls off the end and is never
        # type-checked, saved or loaded.
        __init__ = _video_optional(processor_class.__init__)

        @classmethod
        def get_attributes(cls):
            return [name for name in super().get_attributes() if not _is_video(name)]

        @property
        def video_processor(self):
            # SmolVLM's apply_chat_template reads the video defaults even for images: there are none
            return NO_VIDEO_PROCESSOR

    ImageOnly.__name__ = ImageOnly.__qualname__ = processor_class.__name__
    ImageOnly.__doc__ = f"{processor_class.__name__} for images only (see models.processors)."
    return ImageOnly


def option_value(name: str, value: Any) -> int | bool:
    """An image-processor --model-args value: true/false or a positive whole number (a pixel budget,
    an edge length or a patch count of 0 or less is refused before loading, not failed on later)."""
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    try:
        number = int(text)
    except ValueError:
        raise UserError(f"--model-args {name}={value}: expected a whole number or true/false") from None
    if number < 1:
        raise UserError(f"--model-args {name}={value}: must be a positive whole number")
    return number


class ImageOnlyProcessorModel(FGVRModel):
    """A native model whose processor is loaded for images only (see `image_only`), with image-processor
    --model-args (`image_options`, e.g. the pixel budget of a dynamic-resolution model). They change
    what the model sees, so they are part of the run's model_args in its summary."""

    processor_class: ClassVar[str]  # transformers processor class
    image_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_extra_args(cls, args: dict[str, str]) -> None:
        for name in cls.image_options:
            if name in args:
                option_value(name, args[name])

    def accept_extra_args(self, extra: dict[str, Any]) -> None:
        self.image_settings = {
            name: option_value(name, extra.pop(name)) for name in self.image_options if name in extra
        }
        super().accept_extra_args(extra)

    def load_processor(self):
        import transformers

        processor = self._from_pretrained(image_only(getattr(transformers, self.processor_class)))
        self.configure_images(processor.image_processor)
        return processor

    def configure_images(self, image_processor) -> None:
        """Applies the image options (by default each is the image processor attribute of that name)."""
        for name, value in self.image_settings.items():
            setattr(image_processor, name, value)
