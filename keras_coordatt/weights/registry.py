"""Registry of the upstream ImageNet checkpoints that keras-coordatt can convert and load.

Each :class:`Preset` names one file in a public git repository, pinned twice: the URL points at
a fixed commit, and the content is pinned by its **git blob id** (the SHA-1 of
``b"blob %d\\0" % size + content``, what ``git hash-object`` prints and ``git ls-tree`` lists),
so a download is verified without trusting the server. A preset may carry a SHA-256 as well
(or instead), e.g. for a mirror or for a Git LFS object.

Built-in presets (``list_presets()``):

=================================  ======================================================
name                               upstream file (top-1 / top-5 % as reported upstream)
=================================  ======================================================
``mobilenetv2_ca_100_imagenet``    houqb/CoordAttention ``mbv2_ca.pth`` (74.3)
``mobilenetv2_100_imagenet``       d-li14 ``mobilenetv2-c5e733a8.pth`` (72.834 / 91.060)
``mobilenetv2_100_dli14_v1``       d-li14 ``mobilenetv2_1.0-0c6065bc.pth`` (72.192 / 90.534)
``mobilenetv2_075_imagenet``       d-li14 ``mobilenetv2_0.75-dace9791.pth`` (69.952 / 88.986)
``mobilenetv2_050_imagenet``       d-li14 ``mobilenetv2_0.5-eaa6f9ad.pth`` (64.592 / 85.392)
``mobilenetv2_035_imagenet``       d-li14 ``mobilenetv2_0.35-b2e15951.pth`` (60.092 / 82.172)
``mobilenetv2_025_imagenet``       d-li14 ``mobilenetv2_0.25-b61d2159.pth`` (52.352 / 75.932)
``mobilenetv2_010_imagenet``       d-li14 ``mobilenetv2_0.1-7d1d638a.pth`` (34.896 / 56.564)
``mobilenetv2_100_192_imagenet``   d-li14 ``mobilenetv2_192x192-e423d99e.pth`` (71.076 / 89.760)
``mobilenetv2_100_160_imagenet``   d-li14 ``mobilenetv2_160x160-64dc7fa1.pth`` (69.504 / 88.848)
``mobilenetv2_100_128_imagenet``   d-li14 ``mobilenetv2_128x128-fd66a69d.pth`` (66.740 / 86.952)
``mobilenetv2_100_96_imagenet``    d-li14 ``mobilenetv2_96x96-ff0e83d8.pth`` (62.696 / 84.046)
``mobilenext_100_imagenet``        yitu-opensource/MobileNeXt ``74_02_full_id_tensor/
                                   model_best.pth.tar`` (74.02 / 91.646)
=================================  ======================================================

``weights="imagenet"`` picks the preset marked ``imagenet_default`` for the model's family,
width, attention and (for MobileNetV2 1.0) input size; see :func:`find_imagenet_preset`.

Adding a preset (a mirror, your own checkpoint, a test fixture)::

    from keras_coordatt.weights import Preset, register_preset
    register_preset(Preset(
        name="my_mbv2_ca_050", family="mobilenet_v2", alpha=0.5, attention="ca",
        url="https://example.org/mbv2_ca_050.pth", git_blob="<40 hex>",
    ))
    model = keras_coordatt.applications.MobileNetV2CA(alpha=0.5, weights="my_mbv2_ca_050")

Not verified from here: the blobs themselves are absent from the mirrors these pins were read
from, so whether GitHub serves them directly or through Git LFS (in which case the raw URL
returns a small pointer file and the download fails its hash check with a clear message) is
unknown, and the upstream accuracy numbers were not re-measured.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import threading
import types
from collections.abc import Iterable, Mapping

from keras_coordatt.applications.catalog import ATTENTIONS, CATALOG, FAMILIES

#: Builder name in ``keras_coordatt.applications`` for (family, attention), read from the
#: catalog (``keras_coordatt.applications.CATALOG``).
BUILDERS = types.MappingProxyType(
    {(entry.family, entry.attention): entry.builder_name for entry in CATALOG}
)

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclasses.dataclass(frozen=True)
class Preset:
    """One pretrained checkpoint: where it lives, what it pins, and which model it fits.

    Attributes:
        name: registry key, e.g. ``"mobilenetv2_ca_100_imagenet"``.
        family: ``"mobilenet_v2"`` or ``"mobilenext"``.
        alpha: width multiplier the checkpoint was trained with.
        attention: None, ``"ca"``, ``"se"`` or ``"cbam"``.
        input_size: training / evaluation resolution (square).
        classes: number of classifier outputs in the checkpoint.
        reduction: attention reduction ratio the checkpoint was trained with (None: no
            attention, or not checked).
        repo, commit, path: the file in a GitHub repository (``owner/name``, a 40-hex commit,
            the path inside the repo). The default URL is
            ``https://github.com/{repo}/raw/{commit}/{path}`` and the mirror layout is
            ``{base_url}/{repo}/{commit}/{path}``.
        url: explicit download URL; overrides the GitHub URL (needed when ``repo`` is empty).
        git_blob: content pin, the git blob id (40 hex).
        sha256: optional extra / alternative content pin (64 hex).
        top1, top5: ImageNet accuracy (%) as reported upstream, not re-measured here.
        license: licence of the upstream repository holding the file.
        license_source: where the licence statement was read, or why it is unverified.
        imagenet_default: whether ``weights="imagenet"`` may resolve to this preset.
        description: one line for listings.
    """

    name: str
    family: str
    alpha: float
    attention: str | None = None
    input_size: int = 224
    classes: int = 1000
    reduction: int | None = None
    repo: str = ""
    commit: str = ""
    path: str = ""
    url: str | None = None
    git_blob: str | None = None
    sha256: str | None = None
    top1: float | None = None
    top5: float | None = None
    license: str = "see upstream repository (unverified)"
    license_source: str = ""
    imagenet_default: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"Preset name must be letters, digits, '_', '-', '.', got {self.name!r}."
            )
        if self.family not in FAMILIES:
            raise ValueError(f"Preset {self.name!r}: family must be one of {FAMILIES}, "
                             f"got {self.family!r}.")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"Preset {self.name!r}: attention must be one of {ATTENTIONS}, "
                             f"got {self.attention!r}.")
        object.__setattr__(self, "alpha", float(self.alpha))
        if self.git_blob is not None:
            object.__setattr__(self, "git_blob", self.git_blob.lower())
            if not _HEX40.match(self.git_blob):
                raise ValueError(f"Preset {self.name!r}: git_blob must be 40 hex digits.")
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", self.sha256.lower())
            if not _HEX64.match(self.sha256):
                raise ValueError(f"Preset {self.name!r}: sha256 must be 64 hex digits.")
        if self.git_blob is None and self.sha256 is None:
            raise ValueError(
                f"Preset {self.name!r} has no content pin: give git_blob and/or sha256."
            )
        if not self.url and not (self.repo and self.commit and self.path):
            raise ValueError(f"Preset {self.name!r}: give url, or repo + commit + path.")
        if self.commit and not _HEX40.match(self.commit):
            raise ValueError(f"Preset {self.name!r}: commit must be a full 40-hex commit id.")

    # -- locations ---------------------------------------------------------------------------

    @property
    def upstream_url(self) -> str:
        """The URL the file is downloaded from when no mirror is configured."""
        if self.url:
            return self.url
        return f"https://github.com/{self.repo}/raw/{self.commit}/{self.path}"

    @property
    def mirror_path(self) -> str:
        """Path of the file below a mirror's base URL: ``{repo}/{commit}/{path}``.

        This is the layout of ``raw.githubusercontent.com``, so a mirror is a plain copy of
        the files under those directories. Presets without a repo use their URL's file name.
        """
        if self.repo and self.commit and self.path:
            return f"{self.repo}/{self.commit}/{self.path}"
        return self.file_name

    @property
    def file_name(self) -> str:
        """Upstream file name (last URL / path component)."""
        source = self.path or (self.url or "")
        return source.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or self.name

    @property
    def pin(self) -> str:
        """The primary content pin (git blob id, else sha256) as a hex string."""
        return self.git_blob or self.sha256  # type: ignore[return-value]

    @property
    def cache_file_name(self) -> str:
        """Content-addressed name of the downloaded file in the cache."""
        name = self.file_name
        for suffix in (".pth.tar", ".pth", ".pt", ".tar", ".bin"):
            if name.endswith(suffix):
                return f"{name[: -len(suffix)]}-{self.pin[:12]}{suffix}"
        return f"{name}-{self.pin[:12]}"

    @property
    def builder(self) -> str | None:
        """Name of the ``keras_coordatt.applications`` builder the checkpoint fits."""
        return BUILDERS.get((self.family, self.attention))

    def url_for(self, base_url: str | None = None) -> str:
        """Download URL: ``{base_url}/{mirror_path}`` when a base URL is given, else upstream."""
        if base_url:
            return base_url.rstrip("/") + "/" + self.mirror_path
        return self.upstream_url

    def matches(self, family: str, alpha: float, attention: str | None) -> bool:
        """Whether the checkpoint fits a model of this family / width / attention."""
        return (
            self.family == family
            and self.attention == attention
            and abs(self.alpha - float(alpha)) < 1e-6
        )

    def describe_model(self) -> str:
        """E.g. ``"MobileNetV2CA alpha=1.0 (224x224)"``."""
        builder = self.builder or f"{self.family}(attention={self.attention!r})"
        return f"{builder} alpha={self.alpha!r} ({self.input_size}x{self.input_size})"


# ------------------------------------------------------------------------------------------
# Built-in presets
# ------------------------------------------------------------------------------------------

_CA_REPO = "houqb/CoordAttention"
_CA_COMMIT = "7619bea9acbe260b3793833cc78cef3f124c8112"
_DLI14_REPO = "d-li14/mobilenetv2.pytorch"
_DLI14_COMMIT = "1733532bd43743442077326e1efc556d7cfd025d"
_MNEXT_REPO = "yitu-opensource/MobileNeXt"
_MNEXT_COMMIT = "10f780551d8bdeec505450565801e6b95edc7fbc"

_MIT = "MIT"
_MIT_SOURCE = "LICENSE file of houqb/CoordAttention (MIT License, (c) 2021 Qibin (Andrew) Hou)"
_APACHE = "Apache-2.0"
_APACHE_SOURCE = (
    "README of d-li14/mobilenetv2.pytorch ('licensed under the Apache License 2.0'); "
    "the LICENSE file itself was not read"
)
_MNEXT_LICENSE = "unknown: no licence file or statement found (unverified)"
_MNEXT_SOURCE = (
    "no LICENSE file and no licence statement in the README of yitu-opensource/MobileNeXt "
    "as far as could be checked; treat as all rights reserved until confirmed"
)


def _dli14(name, file, blob, top1, top5, *, alpha=1.0, size=224, default=True, note=""):
    return Preset(
        name=name,
        family="mobilenet_v2",
        alpha=alpha,
        attention=None,
        input_size=size,
        repo=_DLI14_REPO,
        commit=_DLI14_COMMIT,
        path=f"pretrained/{file}",
        git_blob=blob,
        top1=top1,
        top5=top5,
        license=_APACHE,
        license_source=_APACHE_SOURCE,
        imagenet_default=default,
        description=note or f"MobileNetV2 {alpha:g} at {size}x{size} (d-li14/mobilenetv2.pytorch)",
    )


_BUILTIN: tuple[Preset, ...] = (
    Preset(
        name="mobilenetv2_ca_100_imagenet",
        family="mobilenet_v2",
        alpha=1.0,
        attention="ca",
        reduction=32,
        repo=_CA_REPO,
        commit=_CA_COMMIT,
        path="mbv2_ca.pth",
        git_blob="07b6640600b7d767acfaebcf5ddb801b675073df",
        top1=74.3,
        license=_MIT,
        license_source=_MIT_SOURCE,
        imagenet_default=True,
        description="MobileNetV2 1.0 + Coordinate Attention, the paper's model (mbv2_ca.pth)",
    ),
    _dli14(
        "mobilenetv2_100_imagenet", "mobilenetv2-c5e733a8.pth",
        "328582ba4afd90b6d910cda251d9d9e411b60c39", 72.834, 91.060,
        note="MobileNetV2 1.0, d-li14's 'better' 250-epoch model (mobilenetv2-c5e733a8.pth)",
    ),
    _dli14(
        "mobilenetv2_100_dli14_v1", "mobilenetv2_1.0-0c6065bc.pth",
        "0a66ce95c46d5047a0fc003c0c5a8205875e1b8b", 72.192, 90.534, default=False,
        note="MobileNetV2 1.0, d-li14's 150-epoch model of the width table",
    ),
    _dli14("mobilenetv2_075_imagenet", "mobilenetv2_0.75-dace9791.pth",
           "cdeec72e379dd97de9f2c6da9804bcb2b1acc83d", 69.952, 88.986, alpha=0.75),
    _dli14("mobilenetv2_050_imagenet", "mobilenetv2_0.5-eaa6f9ad.pth",
           "ccd6f9174d801e775e3423dd82af6fbc4ee9456c", 64.592, 85.392, alpha=0.5),
    _dli14("mobilenetv2_035_imagenet", "mobilenetv2_0.35-b2e15951.pth",
           "6e99454d05c8600f241f620557201ce9bd28a3a8", 60.092, 82.172, alpha=0.35),
    _dli14("mobilenetv2_025_imagenet", "mobilenetv2_0.25-b61d2159.pth",
           "bf82bc72fc702f6dc491343b4991c1ff6d39b208", 52.352, 75.932, alpha=0.25),
    _dli14("mobilenetv2_010_imagenet", "mobilenetv2_0.1-7d1d638a.pth",
           "2d4bcb67deece9b9c7a01adb040dd28e3f53eb9a", 34.896, 56.564, alpha=0.1),
    _dli14("mobilenetv2_100_192_imagenet", "mobilenetv2_192x192-e423d99e.pth",
           "9a585f75d34131da02aa8cbb68bcc8962607b955", 71.076, 89.760, size=192),
    _dli14("mobilenetv2_100_160_imagenet", "mobilenetv2_160x160-64dc7fa1.pth",
           "dadc7d20135ba9adf391c0273bd5d69c8f531c82", 69.504, 88.848, size=160),
    _dli14("mobilenetv2_100_128_imagenet", "mobilenetv2_128x128-fd66a69d.pth",
           "3389515dd30d953a115e637d2d23f8881d7403af", 66.740, 86.952, size=128),
    _dli14("mobilenetv2_100_96_imagenet", "mobilenetv2_96x96-ff0e83d8.pth",
           "908e3fb021b9a2dad578da9072ea1ae556638b07", 62.696, 84.046, size=96),
    Preset(
        name="mobilenext_100_imagenet",
        family="mobilenext",
        alpha=1.0,
        attention=None,
        repo=_MNEXT_REPO,
        commit=_MNEXT_COMMIT,
        path="mobilenext/output/74_02_full_id_tensor/model_best.pth.tar",
        git_blob="e0a567e52c86ab4a66863745162c758f3fd27d84",
        top1=74.02,
        top5=91.646,
        license=_MNEXT_LICENSE,
        license_source=_MNEXT_SOURCE,
        imagenet_default=True,
        description=(
            "MobileNeXt 1.0, the official 74.02 % run (timm training checkpoint; top-5 from "
            "the run's summary.csv, epoch 207)"
        ),
    ),
)

_LOCK = threading.RLock()
_PRESETS: dict[str, Preset] = {p.name: p for p in _BUILTIN}

#: Read-only live view name -> Preset of everything registered (built-ins and added ones).
PRESETS: Mapping[str, Preset] = types.MappingProxyType(_PRESETS)


def register_preset(preset: Preset, *, overwrite: bool = False) -> Preset:
    """Adds ``preset`` to the registry (``overwrite=True`` to replace a same-named one).

    A preset with ``imagenet_default=True`` registered later wins ``weights="imagenet"`` for
    its family / alpha / attention / input size over earlier ones.
    """
    if not isinstance(preset, Preset):
        raise TypeError(f"register_preset expects a Preset, got {type(preset).__name__}.")
    with _LOCK:
        if preset.name in _PRESETS and not overwrite:
            raise ValueError(
                f"A preset named {preset.name!r} is already registered; pass overwrite=True "
                "to replace it."
            )
        _PRESETS.pop(preset.name, None)  # re-insert at the end: latest default wins
        _PRESETS[preset.name] = preset
    return preset


def unregister_preset(name: str) -> None:
    """Removes a preset; a built-in one comes back as it was shipped."""
    with _LOCK:
        if name not in _PRESETS:
            raise KeyError(name)
        del _PRESETS[name]
        for builtin in _BUILTIN:
            if builtin.name == name:
                _PRESETS[name] = builtin


def list_presets(family: str | None = None, *, attention: str | None = "any") -> list[str]:
    """Names of the registered presets, optionally filtered by family and attention.

    ``attention="any"`` (default) keeps every attention; None keeps only plain models.
    """
    with _LOCK:
        presets = list(_PRESETS.values())
    return [
        p.name
        for p in presets
        if (family is None or p.family == family)
        and (attention == "any" or p.attention == attention)
    ]


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ValueError with close names if there is none."""
    with _LOCK:
        preset = _PRESETS.get(name)
        names = list(_PRESETS)
    if preset is None:
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown weights preset {name!r}.{hint} Known presets: "
            f"{', '.join(names)} (keras_coordatt.weights.list_presets())."
        )
    return preset


def close_preset_names(name: str, n: int = 3, extra: Iterable[str] = ()) -> list[str]:
    """Registered names (plus ``extra`` ones) close to ``name``, for error messages."""
    with _LOCK:
        names = [*extra, *_PRESETS]
    return difflib.get_close_matches(str(name), names, n=n, cutoff=0.5)


def imagenet_candidates(family: str, alpha: float, attention: str | None) -> list[Preset]:
    """Default ImageNet presets for a model, latest registered first."""
    with _LOCK:
        presets = list(_PRESETS.values())
    return [p for p in reversed(presets) if p.imagenet_default and p.matches(family, alpha,
                                                                           attention)]


def find_imagenet_preset(
    family: str, alpha: float, attention: str | None, input_size: int | None = None
) -> Preset | None:
    """The preset ``weights="imagenet"`` means for this model, or None.

    Among the default presets of (family, alpha, attention) it takes the one trained at
    ``input_size`` when there is one (MobileNetV2 1.0 at 96/128/160/192), else the 224 one.
    """
    candidates = imagenet_candidates(family, alpha, attention)
    if not candidates:
        return None
    if input_size is not None:
        for preset in candidates:
            if preset.input_size == input_size:
                return preset
    for preset in candidates:
        if preset.input_size == 224:
            return preset
    return candidates[0]


def describe_available(presets: Iterable[Preset] | None = None) -> str:
    """Human-readable summary of which models have ImageNet weights, for error messages."""
    if presets is None:
        with _LOCK:
            presets = list(_PRESETS.values())
    groups: dict[tuple[str, str | None], dict[float, set[int]]] = {}
    for p in presets:
        if p.imagenet_default:
            groups.setdefault((p.family, p.attention), {}).setdefault(p.alpha, set()).add(
                p.input_size
            )
    parts = []
    for (family, attention), alphas in groups.items():
        builder = BUILDERS.get((family, attention), f"{family}(attention={attention!r})")
        items = []
        for alpha in sorted(alphas):
            sizes = sorted(alphas[alpha])
            size_note = f" (input {'/'.join(map(str, sizes))})" if sizes != [224] else ""
            items.append(f"{alpha!r}{size_note}")
        parts.append(f"{builder} alpha in {{{', '.join(items)}}}")
    return "; ".join(parts)


__all__ = [
    "BUILDERS",
    "PRESETS",
    "Preset",
    "close_preset_names",
    "describe_available",
    "find_imagenet_preset",
    "get_preset",
    "imagenet_candidates",
    "list_presets",
    "register_preset",
    "unregister_preset",
]
