"""qcow2 under blkdebug: I/O errors injected at qcow2's events (QEMU 7.2's BlkdebugEvent
names), the error lines and exit status of the failing qemu-io run, the image left
behind (cmp'd with a twin QEMU wrote through the same rules), `check` before and after
`-r leaks` / `-r all`, and the guest data read back by real QEMU (by="qemu").

References come from qemu-img/qemu-io 7.2 (--backend qemu --regen).
"""

import pytest

from harness import formats

pytestmark = pytest.mark.rw


def _config(iot, text, name="blkdebug.cfg"):
    path = iot.path(name)
    path.write_text(text)
    iot.log(f"# {name}:\n" + "".join(f"#   {line}\n" for line in text.splitlines()))
    return path


def _rule(event, **opts):
    lines = ["[inject-error]", f'event = "{event}"']
    lines += [f'{key} = "{value}"' for key, value in opts.items()]
    return "\n".join(lines) + "\n"


def _set_state(event, state, new_state):
    return (f'[set-state]\nevent = "{event}"\nstate = "{state}"\n'
            f'new_state = "{new_state}"\n')


def _fail(iot, cfg, cmds, size="64M", opts=None, setup=(), name="t.qcow2", args=()):
    """Create an image (and a QEMU-made twin), run `setup` plainly, then `cmds`
    through blkdebug with `cfg` on both; cmp the two images."""
    img = iot.create(size, name=name, opts=opts, args=args)
    twin = iot.create(size, name="qemu-" + name, opts=opts, args=args, by="qemu")
    if setup:
        iot.io(img, setup)
        iot.io(twin, setup, by="qemu")
    iot.io(f"blkdebug:{cfg}:{img.path}", cmds, fmt="")
    iot.io(f"blkdebug:{cfg}:{twin.path}", cmds, fmt="", by="qemu")
    iot.run(["cmp", img.path.name, twin.path.name])
    return img


def _check_repair(iot, img, mode="leaks"):
    iot.img(["check", "-f", "qcow2"], img)
    iot.img(["check", "-f", "qcow2", "-r", mode], img)
    iot.img(["check", "-f", "qcow2"], img)


@formats("qcow2")
def test_blkdebug_l2_alloc_write(iot):
    """The new L2 table cannot be written: its cluster stays counted."""
    cfg = _config(iot, _rule("l2_alloc_write"))
    img = _fail(iot, cfg, "write -P 0x11 0 64k")
    _check_repair(iot, img, "leaks")
    iot.io(img, ["read -P 0 0 64k", "write -P 0x22 0 64k", "read -P 0x22 0 64k"], by="qemu")
    iot.img(["check", "-f", "qcow2"], img)


@formats("qcow2")
def test_blkdebug_l2_alloc_write_once(iot):
    """once=on: only the L2 write fails; the clean-up after it reaches the disk."""
    cfg = _config(iot, _rule("l2_alloc_write", once="on"))
    img = _fail(iot, cfg, ["write -P 0x11 0 64k", "write -P 0x22 64k 64k"])
    _check_repair(iot, img, "all")
    iot.io(img, ["read -P 0 0 64k", "read -P 0x22 64k 64k"], by="qemu")


@formats("qcow2")
def test_blkdebug_l1_update(iot):
    """The L1 entry of a new L2 table cannot be written."""
    cfg = _config(iot, _rule("l1_update"))
    img = _fail(iot, cfg, "write -P 0x11 0 64k", setup=["write -P 0x33 32M 64k"])
    _check_repair(iot, img, "leaks")
    iot.io(img, ["read -P 0 0 64k", "read -P 0x33 32M 64k"], by="qemu")


@formats("qcow2")
def test_blkdebug_write_aio(iot):
    """The guest data write fails after its cluster was allocated."""
    cfg = _config(iot, _rule("write_aio", errno="28"))
    img = _fail(iot, cfg, ["write -P 0x11 0 64k", "read 0 64k"],
                setup=["write -P 0x33 1M 64k"])
    _check_repair(iot, img, "leaks")
    iot.io(img, ["read -P 0 0 64k", "read -P 0x33 1M 64k"], by="qemu")


@formats("qcow2")
def test_blkdebug_write_aio_once_vs_always(iot):
    """once=on fails one request (the next write works); once=off fails all."""
    cfg = _config(iot, _rule("write_aio", once="on"), "once.cfg")
    img = _fail(iot, cfg, ["write -P 0x11 0 64k", "write -P 0x22 64k 64k"],
                setup=["write -P 0x33 1M 64k"])
    _check_repair(iot, img, "all")
    iot.io(img, ["read -P 0 0 64k", "read -P 0x22 64k 64k", "read -P 0x33 1M 64k"],
           by="qemu")
    cfg = _config(iot, _rule("write_aio", once="off"), "always.cfg")
    img = _fail(iot, cfg, ["write -P 0x44 2M 64k", "write -P 0x55 3M 64k"],
                setup=["write -P 0x33 1M 64k"], name="u.qcow2")
    _check_repair(iot, img, "all")
    iot.io(img, ["read -P 0 2M 64k", "read -P 0 3M 64k", "read -P 0x33 1M 64k"], by="qemu")


@formats("qcow2")
def test_blkdebug_immediately(iot):
    """immediately=on fails the same request as the default does."""
    cfg = _config(iot, _rule("write_aio", immediately="on", errno="5"))
    img = _fail(iot, cfg, ["write -P 0x11 0 64k"], setup=["write -P 0x33 1M 64k"])
    _check_repair(iot, img, "leaks")
    iot.io(img, ["read -P 0 0 64k", "read -P 0x33 1M 64k"], by="qemu")


@formats("qcow2")
def test_blkdebug_cluster_alloc(iot):
    """An error armed by cluster allocation hits the refcount block write."""
    cfg = _config(iot, _rule("cluster_alloc"))
    img = _fail(iot, cfg, "write -P 0x11 0 64k", setup=["write -P 0x33 1M 64k"])
    _check_repair(iot, img, "all")
    iot.io(img, ["read -P 0 0 64k", "read -P 0x33 1M 64k"], by="qemu")


@formats("qcow2")
def test_blkdebug_flush_to_disk(iot):
    """A flush that fails: the qemu-io flush command and then closing the image."""
    cfg = _config(iot, _rule("flush_to_disk", iotype="flush"))
    img = _fail(iot, cfg, ["write -P 0x11 0 64k", "flush", "write -P 0x22 64k 64k"])
    _check_repair(iot, img, "all")
    iot.io(img, ["read -P 0x11 0 64k", "read -P 0x22 64k 64k"], by="qemu")


@formats("qcow2")
def test_blkdebug_sector_filter(iot):
    """sector= limits the error to requests covering that sector: the L2 table at
    0x50000 (sector 640) fails, a rule for an untouched sector does nothing."""
    cfg = _config(iot, _rule("l2_alloc_write", sector="640") + _rule("cluster_alloc",
                                                                     sector="100000"))
    img = _fail(iot, cfg, ["write -P 0x11 0 64k", "write -P 0x22 1M 64k"],
                setup=["write -P 0x33 32M 64k"])
    _check_repair(iot, img, "all")
    iot.io(img, ["read -P 0 0 64k", "read -P 0x22 1M 64k", "read -P 0x33 32M 64k"],
           by="qemu")


@formats("qcow2")
def test_blkdebug_set_state(iot):
    """set-state: the error is armed only after the state changed (state 2 after the
    first L2 table was allocated), so the first write succeeds."""
    cfg = _config(iot, _set_state("l2_alloc_write", 1, 2)
                  + _rule("write_aio", state="2", once="on"))
    img = _fail(iot, cfg, ["write -P 0x11 0 64k", "write -P 0x22 64k 64k",
                           "write -P 0x33 128k 64k"])
    _check_repair(iot, img, "all")
    iot.io(img, ["read -P 0x11 0 64k", "read -P 0 64k 64k", "read -P 0x33 128k 64k"],
           by="qemu")


@formats("qcow2")
def test_blkdebug_read_aio(iot):
    """Reads of allocated data fail with the configured errno; the image is intact."""
    cfg = _config(iot, _rule("read_aio", errno="61"))
    img = iot.create("64M")
    iot.io(img, ["write -P 0x11 0 64k"])
    iot.io(f"blkdebug:{cfg}:{img.path}", ["read -P 0 1M 64k", "read -P 0x11 0 64k",
                                          "read -P 0 2M 4k"], fmt="")
    iot.img(["check", "-f", "qcow2"], img)
    iot.io(img, ["read -P 0x11 0 64k"], by="qemu")


def _writes_of_one_l2_table(count, pattern="0x11"):
    """32 KiB writes, each filling one L2 table of a 512-byte-cluster image: one
    request per table (a request spanning several tables runs its parts as parallel
    tasks in QEMU, which orders allocations and data writes differently)."""
    return [f"write -P {pattern} {i * 32}k 32k" for i in range(count)]


@formats("qcow2")
def test_blkdebug_refblock_alloc(iot):
    """512-byte clusters: the fourth table's worth of data needs a new refcount block;
    the write fails at each step of its allocation in turn."""
    for event in ("refblock_alloc", "refblock_alloc_write", "refblock_alloc_hookup"):
        iot.log(f"## {event}")
        cfg = _config(iot, _rule(event), f"{event}.cfg")
        img = _fail(iot, cfg, _writes_of_one_l2_table(4), size="16M",
                    opts="cluster_size=512", name=f"{event}.qcow2")
        _check_repair(iot, img, "all")
        iot.io(img, ["read -P 0x11 0 96k", "read -P 0 96k 32k", "write -P 0x22 96k 32k",
                     "read -P 0x22 96k 32k"], by="qemu")


@formats("qcow2")
def test_blkdebug_refblock_alloc_table(iot):
    """512-byte clusters: past 8 MiB of file the refcount table must grow; the write
    that needs it fails at each of the table's writes in turn."""
    for event in ("refblock_alloc_write_blocks", "refblock_alloc_write_table",
                  "refblock_alloc_switch_table"):
        iot.log(f"## {event}")
        cfg = _config(iot, _rule(event), f"{event}.cfg")
        img = _fail(iot, cfg, _writes_of_one_l2_table(260), size="16M",
                    opts="cluster_size=512", name=f"{event}.qcow2")
        _check_repair(iot, img, "all")
        iot.io(img, ["read -P 0x11 0 7M"], by="qemu")


@formats("qcow2")
def test_blkdebug_cow_zeroed_space(iot):
    """A write into part of a new cluster: 7.2 zeroes the whole cluster with one
    write-zeroes request (cluster_alloc_space), then writes the data (write_aio)."""
    for event, once in (("cluster_alloc_space", "off"), ("write_aio", "off"),
                        ("cluster_alloc_space", "on")):
        iot.log(f"## {event} once={once}")
        cfg = _config(iot, _rule(event, once=once), f"{event}-{once}.cfg")
        img = _fail(iot, cfg, ["write -P 0x11 4k 4k", "write -P 0x22 200k 8k"],
                    setup=["write -P 0x33 1M 64k"], name=f"{event}-{once}.qcow2")
        _check_repair(iot, img, "all")
        iot.io(img, ["read -P 0 0 4k", "read -P 0x33 1M 64k", "read -P 0 192k 8k"],
               by="qemu")


@formats("qcow2")
def test_blkdebug_cow_from_backing(iot):
    """Copy-on-write from a backing file: the old data is read (cow_read, through the
    backing file: read_backing_aio) and written with the new (write_aio, cow_write)."""
    base = iot.create("64M", name="base.qcow2")
    iot.io(base, ["write -P 0x55 0 256k"])
    for event, once in (("cow_read", "off"), ("read_backing_aio", "off"),
                        ("cow_write", "off"), ("cow_write", "on"), ("l2_update", "off")):
        iot.log(f"## {event} once={once}")
        cfg = _config(iot, _rule(event, once=once), f"{event}-{once}.cfg")
        img = _fail(iot, cfg, ["write -P 0x11 4k 4k", "write -P 0x22 68k 60k"],
                    name=f"{event}-{once}.qcow2",
                    args=("-b", str(base.path), "-F", "qcow2"))
        _check_repair(iot, img, "all")
        iot.io(img, ["read -P 0x55 0 4k", "read -P 0x55 8k 56k", "read -P 0x55 64k 4k",
                     "read -P 0x55 128k 128k"], by="qemu")


@formats("qcow2")
def test_blkdebug_compressed(iot):
    """Compressed writes: the bytes allocation (cluster_alloc_bytes), the L2 entry
    (l2_update_compressed) and the data (write_compressed)."""
    for event in ("cluster_alloc_bytes", "l2_update_compressed", "write_compressed"):
        iot.log(f"## {event}")
        cfg = _config(iot, _rule(event), f"{event}.cfg")
        img = _fail(iot, cfg, ["write -c -P 0x11 0 64k", "write -c -P 0x22 64k 64k"],
                    setup=["write -c -P 0x33 1M 64k"], name=f"{event}.qcow2")
        _check_repair(iot, img, "all")
        iot.io(img, ["read -P 0x33 1M 64k"], by="qemu")
    cfg = _config(iot, _rule("read_compressed", errno="5"), "read_compressed.cfg")
    iot.io(f"blkdebug:{cfg}:{img.path}", ["read -P 0x33 1M 64k", "read -P 0x33 1M 4k"],
           fmt="")


@formats("qcow2")
def test_blkdebug_l1_grow(iot):
    """Growing the image past its L1 table's reach (truncate): each step of the new
    L1 table, then a write into the grown part."""
    for event in ("l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table"):
        iot.log(f"## {event}")
        cfg = _config(iot, _rule(event), f"{event}.cfg")
        img = _fail(iot, cfg, ["truncate 8G", "write -P 0x11 6G 64k"],
                    setup=["write -P 0x33 1M 64k"], name=f"{event}.qcow2")
        _check_repair(iot, img, "all")
        iot.img(["info", "-f", "qcow2"], img)
        iot.io(img, ["read -P 0x33 1M 64k"], by="qemu")


def _fail_opts(iot, rules, cmds, size="64M", opts=None, setup=(), name="t.qcow2"):
    """As _fail, with blkdebug given as --image-opts: `rules` are its options
    (file.align=..., file.inject-error.0.event=...)."""
    img = iot.create(size, name=name, opts=opts)
    twin = iot.create(size, name="qemu-" + name, opts=opts, by="qemu")
    if setup:
        iot.io(img, setup)
        iot.io(twin, setup, by="qemu")
    cflags = [arg for c in ([cmds] if isinstance(cmds, str) else cmds) for arg in ("-c", c)]
    for image, by in ((img, None), (twin, "qemu")):
        spec = f"driver=qcow2,file.driver=blkdebug,file.image.filename={image.path},{rules}"
        iot.io(None, [], opts=["--image-opts", *cflags, spec], by=by)
    iot.run(["cmp", img.path.name, twin.path.name])
    return img


@formats("qcow2")
def test_blkdebug_align_rmw(iot):
    """align=4096: small writes to the file are read-modify-written (pwritev_rmw_*
    events). A failed padding read is ignored by 7.2: the write goes on with zeros
    around the data. A rule on the write itself fails it."""
    cases = (("pwritev_rmw_head", "read", "on"), ("pwritev_rmw_tail", "read", "off"),
             ("pwritev_rmw_after_head", "read", "on"), ("pwritev_rmw_tail", "write", "on"),
             ("pwritev", "write", "on"), ("pwritev_done", "write", "off"))
    for event, iotype, once in cases:
        iot.log(f"## {event} iotype={iotype} once={once}")
        img = _fail_opts(iot, f"file.align=4096,file.inject-error.0.event={event},"
                         f"file.inject-error.0.iotype={iotype},file.inject-error.0.once={once}",
                         ["write -P 0x22 8200 100", "write -P 0x33 12000 9000",
                          "write -P 0x44 1M 4k"],
                         setup=["write -P 0x11 0 64k"], name=f"{event}-{iotype}-{once}.qcow2")
        _check_repair(iot, img, "all")
        iot.io(img, ["read -v 8192 16", "read -v 8296 8", "read -v 11992 16",
                     "read -v 20992 16", "read -P 0x11 24k 40k"], by="qemu")


@formats("qcow2")
def test_blkdebug_lazy_refcounts(iot):
    """lazy_refcounts=on: refcount blocks are written only when the image is marked
    clean, so a failing flush leaves a dirty image with refcounts behind; a
    read-write open repairs it, check -r all too."""
    cfg = _config(iot, _rule("flush_to_disk"))
    img = _fail(iot, cfg, ["write -P 0x11 0 64k", "write -P 0x22 4k 4k", "flush",
                           "write -P 0x33 1M 64k"], opts="lazy_refcounts=on")
    iot.img(["info", "-f", "qcow2"], img)
    _check_repair(iot, img, "all")
    iot.io(img, ["read -P 0x11 0 4k", "read -P 0 1M 64k"], by="qemu")


@formats("qcow2")
def test_blkdebug_discard(iot):
    """Discards: the clusters a discard frees go to the file as one merged discard
    at its end; a rule on the first freed cluster (cluster_free, once) fails that
    one request, so nothing is punched; iotype=discard fails discards only."""
    for rule in (_rule("cluster_free", once="on"), _rule("none", iotype="discard"),
                 _rule("cluster_free")):
        iot.log("## " + " ".join(rule.split("\n")[1:]).strip())
        cfg = _config(iot, rule, "discard.cfg")
        img = _fail(iot, cfg, ["discard 0 128k", "write -z -u 1M 64k", "discard 2M 64k",
                               "write -P 0x44 3M 4k"],
                    setup=["write -P 0x11 0 128k", "write -P 0x22 1M 64k",
                           "write -P 0x33 2M 64k"],
                    name="d.qcow2" if "once" in rule else f"d{len(rule)}.qcow2")
        _check_repair(iot, img, "all")
        iot.img(["map", "--output=json", "-f", "qcow2"], img)
        iot.io(img, ["read -P 0 0 128k", "read -P 0 1M 64k"], by="qemu")


@formats("qcow2")
def test_blkdebug_cache_modes(iot):
    """qemu-io -t: writethrough (the default) flushes after every write, writeback
    only when asked and on close, unsafe never reaches the flush rules, none opens
    the file with O_DIRECT (4 KiB requests through blkdebug)."""
    cfg = _config(iot, _rule("l2_alloc_write", iotype="flush", once="on")
                  + _rule("write_aio", iotype="flush", state="2")
                  + _set_state("cow_write", 1, 2))
    for mode in ("writethrough", "writeback", "unsafe", "none"):
        iot.log(f"## -t {mode}")
        img = iot.create("64M", name=f"{mode}.qcow2")
        twin = iot.create("64M", name=f"qemu-{mode}.qcow2", by="qemu")
        cmds = ["write -P 0x11 0 64k", "write -P 0x22 64k 4k", "flush", "write -P 0x33 1M 4k"]
        iot.io(f"blkdebug:{cfg}:{img.path}", cmds, opts=["-t", mode], fmt="")
        iot.io(f"blkdebug:{cfg}:{twin.path}", cmds, opts=["-t", mode], fmt="", by="qemu")
        iot.run(["cmp", img.path.name, twin.path.name])
        _check_repair(iot, img, "all")
        iot.io(img, ["read -P 0x11 0 64k"], by="qemu")


@formats("qcow2")
def test_blkdebug_vmstate(iot):
    """The VM state area (qemu-io read -b / write -b): vmstate_save and vmstate_load,
    the L1 growth a first save needs, and the writethrough flush after a save."""
    for event, once in (("vmstate_save", "off"), ("vmstate_load", "off"),
                        ("l1_grow_write_table", "on"), ("flush_to_disk", "off")):
        iot.log(f"## {event} once={once}")
        cfg = _config(iot, _rule(event, once=once), f"{event}.cfg")
        img = _fail(iot, cfg, ["write -P 0x11 0 64k", "write -b -P 0x22 0 64k",
                               "read -b -P 0x22 0 64k", "write -b -P 0x33 1M 4k"],
                    name=f"{event}.qcow2")
        _check_repair(iot, img, "all")
        iot.io(img, ["read -P 0x11 0 64k"], by="qemu")


@formats("qcow2")
def test_blkdebug_breakpoint_commands(iot):
    """qemu-io break / remove_break / resume: unknown events and tags, and what they
    say without a blkdebug node. No request meets a live breakpoint: 7.2's synchronous
    qemu-io commands would wait forever on the suspended request."""
    img = iot.create("64M")
    cmds = ["break l2_alloc_write A", "break l2_alloc.write B", "remove_break A",
            "remove_break A", "resume X", "break cluster_alloc C", "remove_break C",
            "write -P 0x11 1M 4k", "read -P 0x11 1M 4k"]
    iot.io(f"blkdebug::{img.path}", cmds, fmt="")
    iot.io(img, ["break l2_alloc_write A", "remove_break A", "resume A"])
    iot.img(["check", "-f", "qcow2"], img)


@formats("qcow2")
def test_blkdebug_bad_configs(iot):
    """Config files and options 7.2 refuses, and its words for them."""
    img = iot.create("64M")
    bad = {
        "unknown-event.cfg": _rule("l2_alloc.write"),
        "no-event.cfg": '[inject-error]\nerrno = "5"\n',
        "no-group.cfg": 'event = "l1_update"\n',
        "bad-group.cfg": '[inject-errors]\nevent = "l1_update"\n',
        "bad-key.cfg": _rule("l1_update") + 'bogus = "1"\n',
        "bad-errno.cfg": _rule("l1_update", errno="x"),
        "bad-bool.cfg": _rule("l1_update", once="maybe"),
        "bad-iotype.cfg": _rule("l1_update", iotype="fsync"),
        "set-state-errno.cfg": '[set-state]\nevent = "l1_update"\nerrno = "5"\n',
        "unquoted.cfg": "[inject-error]\nevent = l1_update\n",
        "blank.cfg": "[inject-error]\n   \n",
        "duplicate-id.cfg": '[inject-error "a"]\nevent = "l1_update"\n'
                            '[inject-error "a"]\nevent = "l1_update"\n',
    }
    for name, text in bad.items():
        cfg = _config(iot, text, name)
        iot.io(f"blkdebug:{cfg}:{img.path}", "read 0 512", fmt="")
    iot.io(f"blkdebug:{iot.path('missing.cfg')}:{img.path}", "read 0 512", fmt="")
    iot.io(f"blkdebug:{img.path}", "read 0 512", fmt="")
    base = f"driver=qcow2,file.driver=blkdebug,file.image.filename={img.path}"
    for extra in ("file.inject-error.0.event=bogus", "file.inject-error.0.bogus=1",
                  "file.inject-error.0=1", "file.set-state.1.event=l1_update",
                  "file.align=3", "file.bogus=1", "file.config=" + str(iot.path("nope"))):
        iot.io(None, [], opts=["--image-opts", "-c", "read 0 512", f"{base},{extra}"])
    iot.io(None, [], opts=["--image-opts", "-c", "read 0 512",
                           "driver=qcow2,file.driver=blkdebug"])


@formats("qcow2")
def test_blkdebug_inline_rules(iot):
    """Rules given as options: --image-opts inject-error.N.* and set-state.N.*, the
    info of the filtered image, and an error armed when the node opens (none)."""
    img = iot.create("64M")
    iot.io(img, ["write -P 0x11 0 64k"])
    base = f"driver=qcow2,file.driver=blkdebug,file.image.filename={img.path}"
    iot.io(None, [], opts=["--image-opts", "-c", "read -P 0x11 0 64k", "-c", "info",
                           f"{base},file.inject-error.0.event=read_aio,"
                           "file.inject-error.0.state=2,file.set-state.0.event=l2_load,"
                           "file.set-state.0.new_state=2"])
    iot.io(None, [], opts=["--image-opts", "-c", "read -P 0x11 0 64k",
                           f"{base},file.inject-error.0.event=read_aio,"
                           "file.inject-error.0.iotype=write"])
    iot.io(None, [], opts=["--image-opts", "-c", "read -P 0x11 0 64k",
                           f"{base},file.inject-error.event=none,file.inject-error.errno=1"])
    iot.img(["info", "--image-opts", f"{base},file.inject-error.0.event=l1_update"])
    iot.img(["info", f"blkdebug::{img.path}"])
    iot.img(["check", "-f", "qcow2"], img)
