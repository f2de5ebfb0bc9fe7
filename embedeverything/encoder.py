"""The encoder contract: what a plugin implements, and what the framework owns.

A plugin subclasses :class:`Encoder`, sets ``name``, ``modality`` and ``dim`` (a class attribute, or a
property of the options: it must be known without loading weights), and implements ``load`` and
``embed_batch``. The framework owns ``embed`` and ``embed_checked``: they load lazily, freeze, check every
output and name the plugin when something is wrong. Constructing an encoder must stay cheap:
``ee encoders`` builds one of each to describe them.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import BadItem, EEError, PluginError, UserError, field_errors
from .images import ImageDecoding
from .items import MODALITIES, nonfinite_reason

if TYPE_CHECKING:
    from .weights import WeightFile


_OPTION_FLAG: contextvars.ContextVar[str] = contextvars.ContextVar("ee_option_flag", default="--opt")


def option_flag() -> str:
    """The flag that gives options to the encoder at work, in the command running it (``--opt`` in
    ``ee embed``, ``--a-opt`` / ``--b-opt`` in ``ee pair``): a plugin's hints name this, not a guess."""
    return _OPTION_FLAG.get()


@contextlib.contextmanager
def options_given_by(flag: str) -> Iterator[None]:
    """Within this block, :func:`option_flag` is ``flag``: set by a command around its encoder's work."""
    token = _OPTION_FLAG.set(flag)
    try:
        yield
    finally:
        _OPTION_FLAG.reset(token)


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Weights(BaseModel):
    """What ``Encoder.load`` returns: which weights were actually loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str
    # "sha256:<hex>" of the weights file(s), or "random-init" (then ``seed`` says which)
    weights: str
    seed: int | None = None

    @property
    def random_init(self) -> bool:
        return self.weights == "random-init"


class EncoderIdentity(BaseModel):
    """Everything that decides an encoder's output; recorded with every stored array and adapter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    modality: str
    dim: int
    plugin: str
    plugin_version: str
    model_id: str
    weights: str
    seed: int | None = None
    options: dict[str, Any] = {}
    shared_space: str | None = None
    # How files became the encoder's items (image encoders: ``ImageDecoding.identity()``). Arrays recorded
    # before it existed hold {} here, so they are refused by name rather than mixed with other pixels.
    decoding: dict[str, Any] = {}

    # A newer plugin release must not orphan every store and adapter made with an older one.
    SOFT_FIELDS: ClassVar[tuple[str, ...]] = ("plugin_version",)

    def differences(self, other: EncoderIdentity) -> tuple[list[str], list[str]]:
        """Fields that differ: (hard, soft). Hard ones change the output; soft ones only warn."""
        hard, soft = [], []
        mine, theirs = self.model_dump(), other.model_dump()
        for key in mine:
            if mine[key] != theirs[key]:
                (soft if key in self.SOFT_FIELDS else hard).append(key)
        return hard, soft

    def encoder_options(self) -> dict[str, Any]:
        """The options that build this encoder again: its own plus the framework's decoding ones."""
        return {**self.options, **{k: v for k, v in self.decoding.items() if k in ImageDecoding.model_fields}}


def require_same_identity(
    recorded: EncoderIdentity,
    installed: EncoderIdentity,
    what: str,
    way_out: str,
    error: type[EEError] = UserError,
    field_prefix: str = "",
    labels: tuple[str, str] = ("recorded", "now"),
) -> list[str]:
    """The one rule for reusing stored outputs (a store's array, an adapter's side) with an encoder now.

    A hard difference means other outputs: refused with ``error``, naming every field. Soft ones (a plugin
    upgrade) are returned as warnings for the caller to show. Each field reads
    ``{field_prefix}{field}: {labels[0]} <recorded value>, {labels[1]} <value now>``."""
    hard, soft = recorded.differences(installed)
    if hard:
        detail = "; ".join(
            f"{field_prefix}{f}: {labels[0]} {getattr(recorded, f)!r}, {labels[1]} {getattr(installed, f)!r}"
            for f in hard
        )
        raise error(f"{what} was made with other encoder settings ({detail}); {way_out}")
    return [
        f"{what}: {field_prefix}{f} was {getattr(recorded, f)!r}, now {getattr(installed, f)!r}" for f in soft
    ]


def options_key(name: str, options: dict[str, Any]) -> str:
    """A short stable key for (encoder, options): the name of its array in a store."""
    import json

    blob = json.dumps({"encoder": name, "options": options}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


class Encoder:
    """Base class of every encoder. Subclass it in a plugin; see docs/plugins.md."""

    name: ClassVar[str]
    modality: ClassVar[str]
    dim: int
    #: the batch size ``ee embed`` uses unless told otherwise
    default_batch_size: ClassVar[int] = 32
    #: a pydantic model of this encoder's options (``--opt key=value`` on the CLI)
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: options that say where or how fast to run, not what to compute: left out of the identity and of the
    #: store's array key, so that embedding on a GPU fills the same array as on a CPU
    runtime_options: ClassVar[frozenset[str]] = frozenset({"device", "num_workers", "compile"})

    def __init__(self, **options: Any):
        #: how files become this encoder's items; the framework's own options (``background``), taken
        #: out of ``options`` before the plugin's model sees them. None for encoders of other modalities.
        self.decoding: ImageDecoding | None = None
        try:
            if self.modality == "image":
                self.decoding = ImageDecoding(
                    **{k: options.pop(k) for k in list(options) if k in ImageDecoding.model_fields}
                )
            self.options = self.Options(**options)
        except ValidationError as e:
            raise UserError(
                f"bad option for encoder {self.name!r}: {field_errors(e, whole='options')}"
            ) from None
        self._weights: Weights | None = None
        # Set by the registry: which installed distribution registered this encoder.
        self.plugin_name: str = type(self).__module__.split(".")[0]
        self.plugin_version: str = _module_version(type(self).__module__)

    # ---- what a plugin may override -------------------------------------------------------------
    @property
    def shared_space(self) -> str | None:
        """The name of a space this encoder's output already shares with other encoders (CLIP's
        image and text towers declare the same one), or None. The trainer keeps such a side as is."""
        return None

    def weights_source(self) -> str:
        """Where the weights come from, said without loading them (shown by ``ee encoders``)."""
        return "none needed"

    def weight_files(self) -> list[WeightFile]:
        """The pretrained files ``load`` reads, each with the reference hash that ships with the plugin.

        Declaring them lets ``ee weights fetch`` fill the cache on an online machine and ``ee weights
        verify`` check a copy on an offline one. The default, none, means the plugin manages its weights
        itself (a package on PyPI, no weights at all)."""
        return []

    def load(self) -> Weights:
        """Read the weights (lazily: never at import or construction) and say which ones."""
        raise NotImplementedError

    def check_item(self, item: Any) -> None:
        """Raise :class:`BadItem` for an input this encoder cannot embed (recorded, not fatal)."""

    def embed_batch(self, items: Sequence[Any]) -> Any:
        """Decoded items in, a float array ``[len(items), dim]`` out (numpy, or a CPU/GPU tensor)."""
        raise NotImplementedError

    def torch_modules(self) -> list[Any]:
        """The torch modules the encoder runs; the framework puts them in eval mode, without grad."""
        return []

    # ---- what the framework owns ----------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._weights is not None

    def ensure_loaded(self) -> Weights:
        if self._weights is None:
            weights = self.load()
            if not isinstance(weights, Weights):
                raise PluginError(self.plugin_name, f"{type(self).__name__}.load() must return Weights")
            for module in self.torch_modules():
                module.eval()
                module.requires_grad_(False)
            if weights.random_init:
                print(
                    f"WARNING: encoder {self.name!r} runs with RANDOM weights (seed {weights.seed}); "
                    "its embeddings mean nothing and are recorded as such.",
                    file=sys.stderr,
                )
            self._weights = weights
        return self._weights

    def identity(self) -> EncoderIdentity:
        w = self.ensure_loaded()
        return EncoderIdentity(
            name=self.name,
            modality=self.modality,
            dim=int(self.dim),
            plugin=self.plugin_name,
            plugin_version=self.plugin_version,
            model_id=w.model_id,
            weights=w.weights,
            seed=w.seed,
            options=self.output_options(),
            shared_space=self.shared_space,
            decoding={} if self.decoding is None else self.decoding.identity(),
        )

    def output_options(self) -> dict[str, Any]:
        """The options that decide the output (all but ``runtime_options``), as JSON-able values."""
        return {
            k: v for k, v in self.options.model_dump(mode="json").items() if k not in self.runtime_options
        }

    def given_options(self) -> dict[str, Any]:
        """Every option this encoder was built with (runtime and decoding ones too), as JSON-able values."""
        own = self.options.model_dump(mode="json")
        return own if self.decoding is None else {**own, **self.decoding.model_dump(mode="json")}

    def embed(self, items: Sequence[Any], batch_size: int | None = None) -> np.ndarray:
        """Embed ``items`` in batches; returns float32 ``[len(items), dim]``.

        Items this encoder rejects raise :class:`BadItem`; use the store runner to record them instead.
        """
        self.ensure_loaded()
        items = list(items)
        bs = int(batch_size or self.default_batch_size)
        out = np.empty((len(items), int(self.dim)), dtype=np.float32)
        for item in items:
            reason = nonfinite_reason(item)
            if reason is not None:
                raise BadItem(reason)
            self.check_item(item)
        for start in range(0, len(items), bs):
            batch = items[start : start + bs]
            out[start : start + len(batch)] = self.embed_checked(batch)
        return out

    def embed_checked(self, batch: Sequence[Any]) -> np.ndarray:
        """Exactly one call of the plugin's ``embed_batch`` on ``batch``: float32 ``[len(batch), dim]``.

        For runners that choose the batches themselves (``ee embed`` starts them at store chunks, so that
        a resumed run computes the same batches): loads the weights if needed, runs frozen (under
        ``torch.inference_mode()``) and checks the output as :meth:`embed` does, but neither splits the
        batch nor calls ``check_item``; filter the items with :func:`check_item_or_reason` first."""
        self.ensure_loaded()
        torch = sys.modules.get("torch")
        if torch is not None:
            with torch.inference_mode():
                raw = self.embed_batch(batch)
        else:
            raw = self.embed_batch(batch)
        return self._check_output(raw, len(batch))

    def _check_output(self, raw: Any, n: int) -> np.ndarray:
        who = f"{self.plugin_name!r} (encoder {self.name!r})"
        if hasattr(raw, "detach") and hasattr(raw, "cpu"):  # a torch tensor, without importing torch
            if str(getattr(raw, "dtype", "")) == "torch.bfloat16":
                raw = raw.float()
            raw = raw.detach().cpu().numpy()
        if not isinstance(raw, np.ndarray):
            raise PluginError(who, f"embed_batch returned {type(raw).__name__}, expected a float array")
        if raw.dtype.kind != "f":
            raise PluginError(who, f"embed_batch returned dtype {raw.dtype}, expected float32")
        if raw.shape != (n, int(self.dim)):
            raise PluginError(
                who,
                f"embed_batch returned shape {tuple(raw.shape)} for {n} items, expected ({n}, {self.dim})",
            )
        if not np.isfinite(raw).all():
            # Non-finite inputs never get here (check_item_or_reason and embed() fail those rows first):
            # the plugin itself is broken.
            bad = int((~np.isfinite(raw)).any(axis=1).sum())
            raise PluginError(
                who,
                f"embed_batch returned NaN or infinite values in {bad} of {n} rows for finite input "
                "(a fault in the plugin, not in the data)",
            )
        return np.ascontiguousarray(raw, dtype=np.float32)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.modality} dim={self.dim}>"


def _module_version(module: str) -> str:
    mod = sys.modules.get(module.split(".")[0])
    return str(getattr(mod, "__version__", "unknown"))


def validate_encoder_class(cls: Any) -> str | None:
    """Why ``cls`` cannot be registered as an encoder, or None."""
    if not (isinstance(cls, type) and issubclass(cls, Encoder)):
        return f"{cls!r} is not a subclass of embedeverything.Encoder"
    for attr in ("name", "modality"):
        if not isinstance(getattr(cls, attr, None), str) or not getattr(cls, attr):
            return f"{cls.__name__} has no {attr!r} (a non-empty str)"
    if cls.modality not in MODALITIES:
        return f"{cls.__name__}.modality is {cls.modality!r}; expected one of {', '.join(MODALITIES)}"
    if cls.embed_batch is Encoder.embed_batch:
        return f"{cls.__name__} does not implement embed_batch"
    if cls.load is Encoder.load:
        return f"{cls.__name__} does not implement load"
    if cls.modality == "image":
        taken = sorted(set(getattr(cls.Options, "model_fields", {})) & set(ImageDecoding.model_fields))
        if taken:
            return f"{cls.__name__}.Options declares {', '.join(taken)}, an image decoding option of the framework"
    return None


def check_item_or_reason(encoder: Encoder, item: Any) -> str | None:
    """Why ``encoder`` rejects ``item`` (its :class:`BadItem` reason), or None: a rejected item is a row
    recorded as failed, not an error that stops the run. Non-finite input is rejected here for every
    encoder, so that non-finite output can only mean a broken plugin."""
    reason = nonfinite_reason(item)
    if reason is not None:
        return reason
    try:
        encoder.check_item(item)
    except BadItem as e:
        return e.reason
    return None
