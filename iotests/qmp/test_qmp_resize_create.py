"""block_resize on raw and qcow2 nodes; blockdev-create of raw and qcow2 images and
their jobs (JOB_STATUS_CHANGE events, query-jobs, job-dismiss)."""

from harness import Iot, formats


def test_block_resize(iot: Iot) -> None:
    img = iot.create("1M", fmt="raw", name="t.raw")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="raw", node_name="r",
              file={"driver": "file", "filename": img, "node-name": "f"})
    m.qmp_log("block_resize", node_name="r", size=2097152)
    m.qmp_log("block_resize", node_name="r", size=-1)
    m.qmp_log("block_resize", node_name="r", size="1M")
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("block_resize", node_name="r", size=1000)
    m.qmp_log("block_resize", node_name="f", size=4096)
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("blockdev-del", node_name="r")
    m.qmp_log("quit")
    iot.img(["info", "-f", "raw"], img)


@formats("qcow2")
def test_block_resize_qcow2(iot: Iot) -> None:
    img = iot.create("1M")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="file", node_name="f", filename=img)
    m.qmp_log("blockdev-add", driver="qcow2", node_name="q", file="f")
    m.qmp_log("block_resize", node_name="q", size=8388608)
    m.qmp_log("block_resize", node_name="f", size=8388608)
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("blockdev-del", node_name="q")
    m.qmp_log("blockdev-del", node_name="f")
    m.qmp_log("quit")
    iot.img("info", img)
    iot.img("check", img)


def test_blockdev_create_raw(iot: Iot) -> None:
    img = iot.image("t.raw", fmt="raw")
    m = iot.machine()
    m.qmp_log("blockdev-create", job_id="job0",
              options={"driver": "file", "filename": img, "size": 1048576})
    m.run_job("job0")
    m.qmp_log("query-jobs")
    m.qmp_log("blockdev-create", job_id="job1",
              options={"driver": "file", "filename": img, "size": 65536,
                       "preallocation": "full"})
    m.run_job("job1")
    iot.log("=== Errors ===")
    m.qmp_log("blockdev-create", job_id="job2",
              options={"driver": "file", "filename": iot.path("nosuch/t.raw"), "size": 0})
    m.qmp_log("blockdev-create", job_id="job3",
              options={"driver": "qcow2", "file": "nosuch", "size": 0})
    m.qmp_log("query-jobs")
    m.qmp_log("blockdev-create", job_id="job2",
              options={"driver": "file", "filename": img, "size": 0})
    m.run_job("job2")
    m.run_job("job3")
    m.qmp_log("blockdev-create", job_id="job4",
              options={"driver": "raw", "file": "nosuch", "size": 0})
    m.qmp_log("blockdev-create", job_id="job2", options={"driver": "file"})
    m.qmp_log("blockdev-create", options={"driver": "file", "filename": img, "size": 0})
    m.qmp_log("quit")
    iot.img(["info", "-f", "raw"], img)


@formats("qcow2")
def test_blockdev_create_qcow2(iot: Iot) -> None:
    img = iot.image()
    m = iot.machine()
    m.qmp_log("blockdev-create", job_id="job0",
              options={"driver": "file", "filename": img, "size": 0})
    m.run_job("job0")
    m.qmp_log("blockdev-add", driver="file", node_name="f", filename=img)
    m.qmp_log("blockdev-create", job_id="job1",
              options={"driver": "qcow2", "file": "f", "size": 67108864,
                       "cluster-size": 65536})
    m.run_job("job1", dismiss=False)
    m.qmp_log("query-jobs")
    m.qmp_log("job-dismiss", id="job1")
    m.qmp_log("query-jobs")
    m.qmp_log("blockdev-add", driver="qcow2", node_name="q", file="f")
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("blockdev-del", node_name="q")
    m.qmp_log("blockdev-del", node_name="f")
    m.qmp_log("quit")
    iot.img("info", img)
    iot.img("check", img)
