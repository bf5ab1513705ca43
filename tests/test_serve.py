"""The HTTP service (python -m image_transfer.serve) run for real, as a process on 127.0.0.1, from a checkpoint trained
here on made-up images and from its ONNX export: its answers are predict's csv (EXIF orientation included), multipart
files are answered as a list, concurrent requests batched together each get their own images' answers, bad input
gets a 4xx with a reason and the service goes on, and scripts/load_test.py drives it."""

from __future__ import annotations

import http.client
import json
import mimetypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from image_transfer import PROJECT_ROOT
from image_transfer import serve as serve_module
from image_transfer.export import export
from image_transfer.predict import predict
from image_transfer.train import train
from tests.helpers.configs import QUICK, compose_config, run_entry_point
from tests.helpers.files import read_csv
from tests.helpers.http import files, multipart, post, request
from tests.helpers.images import CLASSES, blocks, save_oriented
from tests.helpers.scripts import load_script
from tests.test_multilabel_data import CLASSES as MULTI_LABEL
from tests.test_multilabel_data import SETS, make_multilabel

load_test = load_script("load_test")

MAX_PIXELS = 1_000_000
# Small limits to test them; a batch timeout long enough that concurrent requests share batches.
SERVICE_OPTIONS = ["max_upload_mb=1", f"max_pixels={MAX_PIXELS}", "max_batch_size=8", "batch_timeout=0.05"]
KINDS = ["ckpt", "onnx"]


class Models(NamedTuple):
    ckpt: Path
    onnx: Path
    data: list[str]  # the data.root override predict needs


@pytest.fixture(scope="module")
def models(made_up_data, tmp_path_factory) -> Models:
    """The baseline CNN on made-up images, with flip TTA and a decision threshold, and its ONNX export."""
    run_dir, data = tmp_path_factory.mktemp("serve_model"), [f"data.root={made_up_data.root}"]
    rule = ["model.tta_flip=true", "decision.positive=emergency", "decision.threshold=0.4"]
    train(compose_config("train", run_dir, [*QUICK, *rule, *data]))
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    onnx = export(compose_config("export", run_dir, [f"ckpt_path={ckpt}", f"output={run_dir / 'model.onnx'}"]))
    return Models(ckpt, onnx, data)


@pytest.fixture(scope="module")
def pictures(made_up_data, tmp_path_factory) -> Path:
    """Images to predict: some of the data set's; a JPEG whose EXIF tag turns it, and the same pixels untagged; a
    turned JPEG large enough to decode in draft mode; a PNG."""
    folder = tmp_path_factory.mktemp("pictures")
    for name in ("0.jpg", "1.jpg", "100.jpg", "139.jpg"):
        shutil.copyfile(made_up_data.root / "images" / name, folder / name)
    save_oriented(blocks(900, size=(60, 40)), folder / "tagged.jpg", 6, quality=95)
    blocks(900, size=(60, 40)).save(folder / "untagged.jpg", quality=95)
    save_oriented(blocks(901, size=(600, 400)), folder / "large_tagged.jpg", 8, quality=90)
    blocks(902).save(folder / "grid.png")
    return folder


@pytest.fixture(scope="module")
def services(models, tmp_path_factory) -> Iterator[dict[str, str]]:
    """The service of the checkpoint and of the ONNX file (started together: each takes seconds), by kind: URL."""
    logs = tmp_path_factory.mktemp("serve_logs")
    options = [f"paths.log_dir={logs}", *SERVICE_OPTIONS]
    paths = {"ckpt": models.ckpt, "onnx": models.onnx}
    started = {kind: load_test.start_service(str(path), options, logs / f"{kind}.log") for kind, path in paths.items()}
    try:
        yield {kind: load_test.wait_until_healthy(service, timeout=300) for kind, service in started.items()}
    finally:
        for service in started.values():
            load_test.stop(service)
    for service in started.values():  # SIGTERM stopped it as Ctrl+C does: by itself, none of its processes left
        assert service.process.returncode == 0, service.log.read_text()[-3000:]
        assert not left_running(service.process.pid)


def left_running(session: int, wait: float = 10) -> list[int]:
    """The processes of a session still running after `wait` seconds at most (the last may take a moment to go)."""
    deadline = time.monotonic() + wait
    while (running := running_in_session(session)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return running


def running_in_session(session: int) -> list[int]:
    """The processes of a session (the service and what it started) that have not exited (Linux)."""
    running = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        state, _, _, sid = stat.rpartition(")")[2].split()[:4]  # after the command, which may hold spaces
        if int(sid) == session and state != "Z":  # a zombie has exited; only its parent has not asked
            running.append(int(entry.name))
    return running


@pytest.fixture(scope="module")
def predicted(models, pictures, tmp_path_factory) -> dict[str, dict[str, dict]]:
    """predict's csv rows of the pictures, by kind and image name."""
    rows = {}
    for kind, path in (("ckpt", models.ckpt), ("onnx", models.onnx)):
        overrides = [f"ckpt_path={path}", f"source={pictures}", "trainer.accelerator=cpu", *models.data]
        csv_rows = read_csv(predict(compose_config("predict", tmp_path_factory.mktemp(f"predict_{kind}"), overrides)))
        rows[kind] = {next(iter(row.values())): row for row in csv_rows}
    return rows


def content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0]


def same(answer: dict, other: dict) -> bool:
    """The same class and probabilities within 1e-4 (batches of other sizes add float noise)."""
    close = all(abs(answer["probabilities"][c] - other["probabilities"][c]) <= 1e-4 for c in CLASSES)
    return close and answer["class"] == other["class"]


@pytest.mark.slow  # starts the service's processes
@pytest.mark.parametrize("kind", KINDS)
def test_answers_are_predicts_csv(kind, services, predicted, pictures):
    answers = {}
    for name, row in predicted[kind].items():
        reply = post(services[kind], (pictures / name).read_bytes(), content_type(pictures / name))
        assert reply.status == 200, reply.body
        answers[name] = answer = reply.json()
        assert list(answer["probabilities"]) == CLASSES
        for c in CLASSES:
            assert answer["probabilities"][c] == pytest.approx(float(row[f"prob_{c}"]), abs=1e-4), (name, c)
        assert answer["class"] == list(row.values())[1], name  # by the rule: emergency from p >= 0.4
        assert answer["decision"]["rule"] == "given" and answer["decision"]["positive_class"] == "emergency"
        assert answer["decision"]["threshold"] == 0.4 and answer["decision"]["temperature"] > 0
    assert len(answers) == 8
    # The tag turns the image: were it ignored, the tagged image would be answered as the untagged one.
    tagged, untagged = answers["tagged.jpg"]["probabilities"], answers["untagged.jpg"]["probabilities"]
    assert abs(tagged["emergency"] - untagged["emergency"]) > 1e-3


@pytest.mark.slow  # starts the service's processes
@pytest.mark.parametrize("kind", KINDS)
def test_multipart_files_are_answered_as_a_list_in_their_order(kind, services, pictures):
    url, images = services[kind], [(pictures / n).read_bytes() for n in ("0.jpg", "tagged.jpg", "grid.png", "1.jpg")]
    singles = [post(url, data).json() for data in images]
    (one,) = post(url, *files(images[0])).json()
    assert same(one, singles[0])
    several = post(url, *files(*images)).json()
    assert len(several) == 4 and all(same(a, b) for a, b in zip(several, singles))


@pytest.mark.slow  # starts the service's processes
def test_concurrent_requests_each_get_their_own_images_answers(services, pictures):
    """Requests sent at once share batches (LitServe's dynamic batching): single images, multipart files and images
    that cannot be decoded, whose refusal must not fail the others."""
    url = services["ckpt"]
    images = [p.read_bytes() for p in sorted(pictures.iterdir())]
    expected = [post(url, data).json() for data in images]
    jobs = []  # (body, content type, expected status, expected answer)
    for i in range(24):
        if i % 4 == 3:
            jobs.append((b"not an image", "image/jpeg", 422, None))
        elif i % 4 == 2:
            chosen = [(i + k) % len(images) for k in range(3)]
            jobs.append((*files(*(images[k] for k in chosen)), 200, [expected[k] for k in chosen]))
        else:
            jobs.append((images[i % len(images)], "image/jpeg", 200, expected[i % len(images)]))
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda job: post(url, job[0], job[1]), jobs))
    for (_, _, status, answer), reply in zip(jobs, replies):
        assert reply.status == status, reply.body
        if isinstance(answer, list):
            assert len(reply.json()) == len(answer) and all(same(a, b) for a, b in zip(reply.json(), answer))
        elif answer is not None:
            assert same(reply.json(), answer)


def test_a_multi_label_model_answers_predicts_label_sets(pictures, tmp_path):
    """The worker's own code (setup, decode_request, batch, predict, unbatch, encode_response) run in this process on
    a multi-label checkpoint: each image's classes and probabilities are predict's, with every class's threshold."""
    from image_transfer.serving.api import ClassifierAPI
    from image_transfer.serving.uploads import Upload

    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_multilabel(root, [SETS[i % len(SETS)] for i in range(48)])
    data = ["data=csv", f"data.root={root / 'tags.csv'}", "data.image_dir=pictures", "data.name_column=file"]
    data += ["data.label_column=tags", "data.label_delimiter=|"]
    train(compose_config("train", run_dir, [*QUICK, *data, "decision.pick=f1"]))
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    overrides = [f"ckpt_path={ckpt}", f"source={pictures}", "trainer.accelerator=cpu"]
    rows = read_csv(predict(compose_config("predict", tmp_path / "predict", overrides)))

    settings = OmegaConf.to_container(compose_config("serve", tmp_path / "serve", [f"ckpt_path={ckpt}"]), resolve=True)
    api = ClassifierAPI(settings, max_batch_size=4)
    api.setup("cpu")
    requests = [api.decode_request(Upload([(pictures / row["file"]).read_bytes()], listed=False)) for row in rows]
    answers = [api.encode_response(part) for part in api.unbatch(api.predict(api.batch(requests)))]
    thresholds = torch.load(ckpt, weights_only=True)["hyper_parameters"]["decision"]["thresholds"]
    for row, answer in zip(rows, answers):
        assert sorted(answer["classes"]) == sorted(filter(None, row["tags"].split("|")))
        assert answer["probabilities"] == pytest.approx({c: float(row[f"prob_{c}"]) for c in MULTI_LABEL}, abs=1e-4)
        assert answer["decision"]["thresholds"] == dict(zip(MULTI_LABEL, thresholds))
    assert len({tuple(a["classes"]) for a in answers}) > 1  # the sets differ: the check can fail


def png(size: tuple[int, int], mode: str = "1") -> bytes:
    buffer = BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(image: Image.Image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def declared_only(url: str, length: int) -> tuple[int, bytes]:
    """A request that declares a body of `length` bytes and sends none: refused from its header alone."""
    parts = urlsplit(url)
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {length}\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as connection:
        connection.sendall(head.encode())
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, response.read()


GOOD = jpeg(blocks(7))
# case: (body, Content-Type, status, a piece of the reason)
BAD_INPUT = {
    "empty body": (b"", "image/jpeg", 400, "no body"),
    "text/plain": (b"a photo of a fire engine", "text/plain", 415, "Content-Type text/plain is not an image"),
    "application/json": (b'{"image": "..."}', "application/json", 415, "application/json is not an image"),
    "no Content-Type": (GOOD, None, 415, "Content-Type (none)"),
    "not an image": (b"GIF89a but not really" * 10, "image/gif", 422, "not an image Pillow can read"),
    "truncated JPEG": (GOOD[: len(GOOD) // 2], "image/jpeg", 422, "truncated"),
    "20,000 x 20,000 PNG (a decompression bomb)": (png((20000, 20000)), "image/png", 413, "max_pixels="),
    "over max_pixels": (jpeg(blocks(8, size=(1300, 800))), "image/jpeg", 413, "1300 x 800 pixels, more than"),
    "over max_upload_mb, sent chunked": ([b"\xff" * 65536] * 24, "image/jpeg", 413, "max_upload_mb=1"),
    "multipart without a file": (*multipart([("note", None, b"hello")]), 400, "without a file"),
    "multipart with an empty file": (*files(GOOD, b""), 400, "file 2 of 2 is empty"),
    "multipart with a broken file": (*files(GOOD, GOOD[:300]), 422, "file 2 of 2: a damaged or truncated image"),
    "multipart without a boundary": (b"--x\r\n\r\n", "multipart/form-data", 400, "Missing boundary"),
}


@pytest.mark.slow  # starts the service's processes
@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_gets_a_4xx_with_a_reason_and_the_next_request_is_served(case, services):
    body, kind, status, reason = BAD_INPUT[case]
    url = services["ckpt"]
    reply = post(url, body, kind)
    assert reply.status == status, reply.body
    detail = reply.json()["detail"]
    assert reason in detail and "\n" not in detail
    assert post(url, GOOD, "image/jpeg").status == 200


@pytest.mark.slow  # starts the service's processes
def test_an_upload_over_the_limit_is_refused_by_its_declared_length(services):
    status, body = declared_only(services["ckpt"], 2 * 2**20)
    assert status == 413 and "2097152 bytes, over the limit of max_upload_mb=1" in json.loads(body)["detail"]
    assert post(services["ckpt"], GOOD, "image/jpeg").status == 200


@pytest.mark.slow  # starts the service's processes
def test_health_docs_and_openapi(services):
    url = services["onnx"]
    assert request(url, path="/health") == (200, b"ok")
    docs = request(url, path="/docs")
    assert docs.status == 200 and b"swagger-ui" in docs.body
    schema = request(url, path="/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"image/*", "application/octet-stream", "multipart/form-data"} <= body.keys()


@pytest.mark.slow  # starts the service's processes
def test_it_listens_on_127_0_0_1_alone_by_default(services):
    port = urlsplit(services["ckpt"]).port
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", port), timeout=5)  # another loopback address: not listened on
    with socket.create_server(("0.0.0.0", 0)) as everywhere:  # what the check tells apart
        socket.create_connection(("127.0.0.2", everywhere.getsockname()[1]), timeout=5).close()


@pytest.mark.parametrize(
    "options, message, missing",
    [
        (["ckpt_path=no/such.ckpt"], "ckpt_path=no/such.ckpt: no such checkpoint file", None),
        pytest.param(  # a model that loads: a fit and an export
            ["ckpt_path={onnx}", "host=localhost"],
            "host=localhost port=8000: host must be",
            None,
            marks=pytest.mark.slow,
        ),
        (["ckpt_path=x"], "serving needs litserve: pip install litserve", "litserve"),
    ],
    ids=["missing-checkpoint", "host-name", "without-litserve"],
)
def test_user_errors_are_one_line_and_exit_status_1_before_anything_starts(
    options, message, missing, tmp_path, capsys, request, monkeypatch
):
    """In this process: the entry point's main, as `python -m image_transfer.serve` runs it, refuses before it starts
    any server process (a started one would not return). `missing`: a package made unimportable, as where it is not
    installed."""
    if missing:
        monkeypatch.setitem(sys.modules, missing, None)
    if any("{onnx}" in option for option in options):
        options = [option.format(onnx=request.getfixturevalue("models").onnx) for option in options]
    sigterm = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exited:
        run_entry_point(serve_module.main, *options, f"paths.log_dir={tmp_path}")
    assert signal.getsignal(signal.SIGTERM) is sigterm  # the caller's process goes on as it was
    stderr = capsys.readouterr().err
    assert exited.value.code == 1 and "Uvicorn running" not in stderr and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0], stderr[-3000:]


@pytest.mark.slow  # starts the service's processes
def test_the_load_test_script_reports_every_level(services, pictures, tmp_path):
    out = tmp_path / "load.json"
    arguments = ["--url", services["onnx"], "--images", str(pictures), "--clients", "1", "3", "--seconds", "1"]
    command = [sys.executable, "scripts/load_test.py", *arguments, "--json", str(out)]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| clients | requests/s | p50 ms | p99 ms | errors |" in result.stdout
    figures = json.loads(out.read_text())
    assert figures["images"] == 8 and [level["clients"] for level in figures["levels"]] == [1, 3]
    for level in figures["levels"]:
        assert level["requests"] > 0 and level["errors"] == 0 and level["requests_per_s"] > 0
        assert 0 < level["p50_ms"] <= level["p99_ms"]
