"""qcow2 option lists: creation options (in qcow2_create_opts order) and open options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bdrv.errors import BlockError
from bdrv.options import OptionDesc

from .header import Qcow2Header

_ENC = "encrypt."
CREATE_OPTIONS = (
    OptionDesc("encryption", "bool",
               "Encrypt the image with format 'aes'. (Deprecated in favor of "
               "encrypt.format=aes)"),
    OptionDesc(_ENC + "format", "string",
               "Encrypt the image, format choices: 'aes', 'luks'"),
    OptionDesc(_ENC + "key-secret", "string",
               "ID of secret providing qcow AES key or LUKS passphrase"),
    OptionDesc(_ENC + "cipher-alg", "string", "Name of encryption cipher algorithm"),
    OptionDesc(_ENC + "cipher-mode", "string", "Name of encryption cipher mode"),
    OptionDesc(_ENC + "ivgen-alg", "string", "Name of IV generator algorithm"),
    OptionDesc(_ENC + "ivgen-hash-alg", "string", "Name of IV generator hash algorithm"),
    OptionDesc(_ENC + "hash-alg", "string", "Name of encryption hash algorithm"),
    OptionDesc(_ENC + "iter-time", "number",
               "Time to spend in PBKDF in milliseconds"),
    OptionDesc("cluster_size", "size", "qcow2 cluster size", "65536"),
    OptionDesc("extended_l2", "bool", "Extended L2 tables", "off"),
    OptionDesc("preallocation", "string",
               "Preallocation mode (allowed values: off, metadata, falloc, full)"),
    OptionDesc("compression_type", "string",
               "Compression method used for image cluster compression", "zlib"),
    OptionDesc("size", "size", "Virtual disk size"),
    OptionDesc("compat", "string", "Compatibility level (v2 [0.10] or v3 [1.1])"),
    OptionDesc("backing_file", "string", "File name of a base image"),
    OptionDesc("backing_fmt", "string", "Image format of the base image"),
    OptionDesc("data_file", "string", "File name of an external data file"),
    OptionDesc("data_file_raw", "bool",
               "The external data file must stay valid as a raw image"),
    OptionDesc("lazy_refcounts", "bool", "Postpone refcount updates", "off"),
    OptionDesc("refcount_bits", "number", "Width of a reference count entry in bits", "16"),
)

_OVERLAP_BITS = ("main-header", "active-l1", "active-l2", "refcount-table",
                 "refcount-block", "snapshot-table", "inactive-l1", "inactive-l2",
                 "bitmap-directory")
_TEMPLATES = {"none": 0, "constant": 0x12B, "cached": 0x17F, "all": 0x1FF}

RUNTIME_OPTIONS = (
    "lazy-refcounts", "pass-discard-request", "pass-discard-snapshot",
    "pass-discard-other", "overlap-check", "overlap-check.template", "cache-size",
    "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size", "cache-clean-interval",
) + tuple("overlap-check." + b for b in _OVERLAP_BITS)


@dataclass
class RuntimeOptions:
    lazy_refcounts: bool
    pass_discard_request: bool | None
    pass_discard_other: bool
    overlap_mask: int


def _bool(name: str, value: Any) -> bool:
    from bdrv.open import parse_bool_option

    return parse_bool_option(name, value)


_MIN_CLUSTER_SIZE = 512
_UINT_MAX = 0xFFFFFFFF


def _size(name: str, value: Any) -> int:
    from bdrv.sizes import parse_option_size

    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return parse_option_size(name, str(value))


def _check_cache_sizes(opts: dict[str, Any], cluster_size: int) -> None:
    """read_cache_sizes(): how cache-size, l2-cache-size, refcount-cache-size and
    l2-cache-entry-size may be combined."""
    combined = _size("cache-size", opts["cache-size"]) if "cache-size" in opts else None
    l2 = _size("l2-cache-size", opts["l2-cache-size"]) if "l2-cache-size" in opts else 0
    refcount = _size("refcount-cache-size", opts["refcount-cache-size"]) \
        if "refcount-cache-size" in opts else 0
    entry = _size("l2-cache-entry-size", opts["l2-cache-entry-size"]) \
        if "l2-cache-entry-size" in opts else cluster_size
    if combined is not None:
        if "l2-cache-size" in opts and "refcount-cache-size" in opts:
            raise BlockError("cache-size, l2-cache-size and refcount-cache-size may not be "
                             "set at the same time")
        if "l2-cache-size" in opts and l2 > combined:
            raise BlockError("l2-cache-size may not exceed cache-size")
        if refcount > combined:
            raise BlockError("refcount-cache-size may not exceed cache-size")
    if entry < _MIN_CLUSTER_SIZE or entry > cluster_size or entry & (entry - 1):
        raise BlockError(f"L2 cache entry size must be a power of two between "
                         f"{_MIN_CLUSTER_SIZE} and the cluster size ({cluster_size})")


def parse_runtime_options(options: dict[str, Any], hdr: Qcow2Header,
                          flags: int) -> RuntimeOptions:
    """qcow2_update_options_prepare(), the parts that change behaviour here; checks
    in 7.2's order: cache sizes, L2 cache entry size, cache clean interval, lazy
    refcounts, overlap checks."""
    from bdrv.options import parse_number

    from .header import COMPAT_LAZY_REFCOUNTS

    _check_cache_sizes(options, hdr.cluster_size)
    if "cache-clean-interval" in options:
        # A QemuOpts number: negative values wrap to huge ones.
        interval = parse_number("cache-clean-interval", str(options["cache-clean-interval"]))
        if interval > _UINT_MAX:
            raise BlockError("Cache clean interval too big")

    lazy = bool(hdr.compatible_features & COMPAT_LAZY_REFCOUNTS)
    if "lazy-refcounts" in options:
        lazy = _bool("lazy-refcounts", options.pop("lazy-refcounts"))
    if lazy and hdr.version < 3:
        raise BlockError("Lazy refcounts require a qcow2 image with at least qemu 1.1 "
                         "compatibility level")
    request = None
    if "pass-discard-request" in options:
        request = _bool("pass-discard-request", options.pop("pass-discard-request"))
    other = False
    if "pass-discard-other" in options:
        other = _bool("pass-discard-other", options.pop("pass-discard-other"))
    options.pop("pass-discard-snapshot", None)
    given = options.pop("overlap-check", None)
    given_template = options.pop("overlap-check.template", None)
    if given is not None and given_template is not None and given != given_template:
        raise BlockError(f"Conflicting values for qcow2 options 'overlap-check' ('{given}') "
                         f"and 'overlap-check.template' ('{given_template}')")
    template = str(given_template if given_template is not None else
                   given if given is not None else "cached")
    if template not in _TEMPLATES:
        raise BlockError(f"Unsupported value '{template}' for qcow2 option 'overlap-check'. "
                         "Allowed are any of the following: none, constant, cached, all")
    mask = _TEMPLATES[template]
    for bit, name in enumerate(_OVERLAP_BITS):
        key = "overlap-check." + name
        if key in options:
            if _bool(key, options.pop(key)):
                mask |= 1 << bit
            else:
                mask &= ~(1 << bit)
    for key in ("cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size",
                "cache-clean-interval"):
        options.pop(key, None)
    return RuntimeOptions(lazy, request, other, mask)
