"""icam.storage on a local folder and on a real S3 API (a local moto server): locations with
a query, whole writes, listings, the node cache, and the CAM and mask files written there."""

import uuid

import numpy as np
import pyarrow.fs as pafs
import pytest

from icam.data.voc import save_mask
from icam.inference import load_cam, save_cam
from icam.storage import Storage, cache_root, tune_location


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Storage.open(tmp_path / "store")
    s3 = request.getfixturevalue("s3_server")
    return Storage.open(s3.bucket(f"store-{uuid.uuid4().hex[:12]}"))


def test_a_uri_keeps_its_query_at_the_end_when_names_are_joined():
    root = Storage.open("s3://bucket/prefix/?endpoint_override=127.0.0.1:9000&scheme=http")
    child = root / "ablate_mu" / "tune/"
    assert str(child) == ("s3://bucket/prefix/ablate_mu/tune"
                          "?endpoint_override=127.0.0.1:9000&scheme=http")
    assert Storage.open(str(child)) == child  # travels between processes as text
    assert child.local is None and child.path("x/y.json") == "bucket/prefix/ablate_mu/tune/x/y.json"
    fs = child.filesystem
    assert isinstance(fs, pafs.S3FileSystem)
    assert tune_location(child) == ("bucket/prefix/ablate_mu/tune", fs)
    assert str(Storage.open("gs://b") / "s") == "gs://b/s"


def test_a_local_path_or_file_uri_is_an_absolute_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Storage.open("results").local == tmp_path / "results"
    assert Storage.open(f"file://{tmp_path}/r").local == tmp_path / "r"
    assert tune_location(Storage.open("results") / "s") == (str(tmp_path / "results" / "s"),
                                                             None)


def test_files_are_written_whole_listed_and_read_back(store):
    assert store.files() == set() and not store.exists("a/b.json")
    store.write_json("a/b.json", {"x": 1})
    store.write_bytes(b"\x00\x01", "a/c.bin")
    store.write_bytes(b"deep", "a/sub/d.txt")
    (store / "a" / "c.bin").write_bytes(b"\x02")  # a location naming a file
    assert store.read_json("a/b.json") == {"x": 1}
    assert (store / "a").read_bytes("c.bin") == b"\x02"
    assert store.files("a") == {"b.json", "c.bin"} and store.folders("a") == {"sub"}
    assert store.folders() == {"a"} and store.exists("a/sub/d.txt")
    assert store.files("missing") == set() and store.folders("missing") == set()
    with pytest.raises(FileNotFoundError, match="a/none.json"):
        store.read_bytes("a/none.json")


def test_cams_and_masks_go_to_storage(store):
    cam = np.zeros((20, 3, 4), np.float32)
    cam[6] = np.linspace(0, 1, 12).reshape(3, 4)
    label = np.eye(20, dtype=np.float32)[6]
    save_cam(store / "cams" / "img.npz", cam, label)
    mask = np.array([[0, 7, 7, 255]], np.uint8)
    save_mask(store / "labels" / "img.png", mask)
    loaded, loaded_label = load_cam(store / "cams" / "img.npz")
    np.testing.assert_allclose(loaded, np.round(cam * 4095) / 4095, atol=1e-7)  # 12 bits
    assert (loaded_label == label).all() and store.files("labels") == {"img.png"}
    folder = store.local_folder("labels")
    from icam.data.voc import load_mask

    assert (load_mask(folder / "img.png") == mask).all()


def test_a_stored_folder_is_cached_on_the_node_and_only_new_files_are_fetched(s3_server,
                                                                             tmp_path):
    store = Storage.open(s3_server.bucket("cache-test")) / "study" / "rw"
    store.write_bytes(b"one", "a.png")
    folder = store.local_folder("", tmp_path / "cache")
    assert folder.is_relative_to(tmp_path / "cache") and folder.name == "rw"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {"a.png": b"one"}
    (folder / "a.png").write_bytes(b"kept")  # a cached copy is not fetched again
    store.write_bytes(b"two", "b.png")
    assert store.local_folder("", tmp_path / "cache") == folder
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {"a.png": b"kept",
                                                                  "b.png": b"two"}


def test_the_cache_root_is_the_workdir_or_icam_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ICAM_CACHE", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / "storage"
    assert cache_root(tmp_path / "w") == tmp_path / "w"
    local = Storage.open(tmp_path / "s")
    assert local.local_folder("x") == tmp_path / "s" / "x"  # a local storage is not copied


def test_an_unwritable_local_storage_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=f"storage {blocker / 'sub'} is not writable"):
        Storage.open(blocker / "sub").make_folder()


def test_the_storage_bench_runs_and_projects_a_trial(capsys):
    from icam.bench.storage import FILES, main

    # train_aug + val CAMs, train_aug CRF scores, (train + val) x 2 + train_aug + val PNGs
    assert list(FILES.values()) == [10582 + 1449, 10582, 2913 * 2 + 12031]
    assert main(["--images", "1", "--size", "40x48", "--trials", "120"]) == 0
    out = capsys.readouterr().out
    assert out.count("x smaller") == 2 and out.strip().splitlines()[-1].split()[0] == "120"


def test_the_analysis_reads_the_quantised_cam_files(tmp_path):
    from icam.analysis.qualitative import foreground_heat

    cam = np.zeros((20, 2, 3), np.float32)
    cam[4] = [[0.0, 0.5, 1.0], [0.2, 0.3, 0.4]]
    cam[9] = [[0.9, 0.0, 0.0], [0.0, 0.0, 0.0]]
    save_cam(tmp_path / "c.npz", cam, np.eye(20, dtype=np.float32)[[4, 9]].sum(axis=0))
    with np.load(tmp_path / "c.npz", allow_pickle=False) as arrays:
        heat = foreground_heat(arrays)
    expected = np.round(np.maximum(cam[4], cam[9]) * 4095) / 4095  # the max over class maps
    np.testing.assert_allclose(heat, expected, atol=1e-7)


def test_the_compaction_bench_stores_naive_products_at_full_precision_and_restores_ours(tmp_path):
    import icam.data.affinity
    import icam.stages.affinity
    import icam.stages.cam
    from icam.bench.compaction import naive_storage

    rng = np.random.default_rng(0)
    cam = rng.random((20, 5, 7)).astype(np.float32)
    label = np.eye(20, dtype=np.float32)[[3, 11]].sum(axis=0)
    scores = rng.random((2, 3, 5, 7)).astype(np.float32)
    ours = (icam.stages.cam.save_cam, icam.stages.affinity.save_crf_scores,
            icam.data.affinity.load_crf_scores)
    originals = naive_storage()
    try:
        icam.stages.cam.save_cam(tmp_path / "cam.npz", cam, label)
        icam.stages.affinity.save_crf_scores(tmp_path / "crf.npz", *scores)
        crf = icam.data.affinity.load_crf_scores(tmp_path / "crf.npz")
    finally:
        for module, name, value in originals:
            setattr(module, name, value)
    assert (icam.stages.cam.save_cam, icam.stages.affinity.save_crf_scores,
            icam.data.affinity.load_crf_scores) == ours
    loaded, loaded_label = load_cam(tmp_path / "cam.npz")  # the stages' own reader
    expected = np.zeros_like(cam)
    expected[[3, 11]] = cam[[3, 11]]  # only the present classes are stored, unrounded
    np.testing.assert_array_equal(loaded, expected)
    np.testing.assert_array_equal(loaded_label, label)
    np.testing.assert_array_equal(crf, np.concatenate(scores))
