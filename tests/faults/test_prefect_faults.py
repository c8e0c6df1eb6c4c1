"""Cases 2 and 9, and the Prefect half of the security items, against `make server` and `make
serve` (the real Makefile targets: a Prefect server on a free loopback port with a home of the
test's own, and the deployments of prefect.yaml served from flows/serve.py).

2. The server restarts while a served `annotate` run detects: the run's outcome is clear in the
   API afterwards, and a rerun completes the dataset.
9. Bad parameters as the UI's "Run" form sends them (POST create_flow_run): out-of-range numbers
   are refused by the API itself, naming the field (the flows' typed parameters become the
   deployment's schema, which Prefect enforces); what only the run can know (a class of
   `per_class` the model lacks, an export folder that is a file or lies in the sources) fails
   the run at its first step, naming the field, before any work.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from tests.faults.harness import listening_addresses
from tests.helpers import PLAIN_CONFIG, ROOT, needs_model
from tests.integration.processes import (
    PrefectApi,
    Service,
    assert_every_image_once,
    free_port,
    sample_counts,
    wait_for,
)

pytestmark = needs_model

#: Seconds the server stays down: a restart (`make server` stopped and started again). Measured
#: by hand with 120 s (docs/reliability.md): the run then fails, naming the lost connection.
OUTAGE_SECONDS = float(os.environ.get("BOOTSTRAP_FAULTS_OUTAGE", "15"))
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


class Served:
    """`make server` and `make serve` with this test's port and Prefect home."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        prefect_env = (f"PREFECT_HOME={folder / 'prefect'} PREFECT_API_URL={self.api_url} "
                       "PREFECT_SERVER_ANALYTICS_ENABLED=false")
        self.make = ["make", "--no-print-directory", f"PREFECT_PORT={self.port}",
                     f"PREFECT_ENV={prefect_env}"]
        self.env = dict(os.environ, BOOTSTRAP_LEASE_TTL="600")
        self.env.pop("PREFECT_API_URL", None)
        self.api = PrefectApi(self.api_url)
        self.starts = 0
        self.server = self.serve = None

    def start_server(self) -> None:
        self.starts += 1
        self.server = Service([*self.make, "server"], self.env, self.folder / f"server-{self.starts}.log")
        wait_for(self.api.healthy, "make server", timeout=240, every=1)

    def start_serve(self) -> None:
        self.serve = Service([*self.make, "serve"], self.env, self.folder / "serve.log")
        wait_for(lambda: self.api.deployment("export/on-demand"), "make serve's deployments",
                 timeout=240, every=1)

    def deployment(self, name: str) -> str:
        return self.api.deployment(name)["id"]

    def create_run(self, deployment: str, parameters: dict):
        """What the UI's Run form sends."""
        return self.api._call("POST", f"/deployments/{self.deployment(deployment)}/create_flow_run",
                              json={"parameters": parameters})

    def wait_done(self, run_id: str, timeout: float = 600) -> dict:
        wait_for(lambda: self.api.state(run_id) in TERMINAL, f"flow run {run_id}", timeout=timeout,
                 every=1)
        return self.api._call("GET", f"/flow_runs/{run_id}").json()["state"]

    def stop(self) -> None:
        for service in (self.serve, self.server):
            if service is not None:
                service.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    services = Served(tmp_path_factory.mktemp("served"))
    try:
        services.start_server()
        services.start_serve()
        yield services
    finally:
        services.stop()


def test_make_server_and_serve_listen_on_loopback_only(served, report_case):
    server = listening_addresses(served.server.process.pid)
    assert (("127.0.0.1", served.port)) in server, server
    serve = listening_addresses(served.serve.process.pid)
    public = sorted(a for a in server | serve if a[0] not in ("127.0.0.1", "::1"))
    assert public == []
    report_case("listen-prefect", seen=f"make server: {sorted(server)}; make serve: "
                f"{sorted(serve) or 'no listening socket'}", lost="-")


def test_server_restart_during_a_served_run(served, photo_folder, dataset_name, report_case):
    photos = photo_folder(24)
    params = {"dataset": dataset_name, "sources": [str(photos)], "config_path": PLAIN_CONFIG,
              "detector": {"batch_size": 1}, "chunk_size": 4}
    answer = served.create_run("annotate/nightly", params)
    answer.raise_for_status()
    run = answer.json()["id"]
    wait_for(lambda: (n := sample_counts(dataset_name))[0] == 24 and n[1] < 24, "a stored chunk",
             timeout=300, every=0.1)
    served.server.stop()
    down = time.monotonic()
    time.sleep(OUTAGE_SECONDS)
    served.start_server()  # same port, same home (its SQLite database)
    back = time.monotonic()
    assert served.serve.process.poll() is None  # `make serve` survived the outage
    state = served.wait_done(run)
    outcome = f"{state['type']}" + (f": {state['message']}" if state.get("message") else "")
    if state["type"] != "COMPLETED":
        assert state["message"], state  # a failed run says why
    rerun = served.create_run("annotate/nightly", params | {"wait_seconds": 0}).json()["id"]
    assert served.wait_done(rerun)["type"] == "COMPLETED", served.api.logs(rerun)[-3000:]
    assert_every_image_once(dataset_name, photos)
    report_case(
        "prefect-restart",
        seen=f"the run's state after a {OUTAGE_SECONDS:.0f} s outage (server back in "
             f"{back - down:.0f} s): {outcome}",
        lost="nothing: the run resumed when the API came back; the rerun found every image "
             "stored once",
    )


@pytest.fixture
def bad_configs(tmp_path, photo_folder):
    photos = photo_folder(4)
    plain = yaml.safe_load(Path(PLAIN_CONFIG).read_text())
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(plain | {"triage": plain["triage"] | {
        "per_class": {"persn": {"accept": 0.9}}}}))
    with_sources = tmp_path / "with-sources.yaml"
    with_sources.write_text(yaml.safe_dump(plain | {"sources": [str(photos)]}))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder\n")
    return photos, typo, with_sources, a_file


def test_bad_parameters_are_refused_before_any_work(served, bad_configs, dataset_name, report_case):
    import fiftyone as fo

    photos, typo, with_sources, a_file = bad_configs
    refused = {  # the API refuses them: no flow run is created
        "review budget -3": ("review/on-demand", {"dataset": dataset_name, "budget": -3}, "budget"),
        "end-to-end review_budget 0": ("bootstrap/end-to-end",
                                       {"dataset": dataset_name, "review_budget": 0}, "review_budget"),
        "annotate chunk_size 0": ("annotate/nightly", {"dataset": dataset_name, "chunk_size": 0},
                                  "chunk_size"),
    }
    seen = {}
    for case, (deployment, parameters, field) in refused.items():
        answer = served.create_run(deployment, parameters)
        assert answer.status_code in (409, 422), (case, answer.status_code, answer.text)
        text = answer.text
        assert f"'{field}'" in text or f'"{field}"' in text, (case, text)
        seen[case] = answer.json().get("detail", text)

    export_dir = str(photos / "export")
    failing = {  # the run fails at its first step
        "per_class names a class the model lacks": (
            "annotate/nightly",
            {"dataset": dataset_name, "sources": [str(photos)], "config_path": str(typo)},
            "triage.per_class: unknown class 'persn' (did you mean 'person'?); the dataset's "
            "classes are person, bicycle"),
        "export folder is a file": (
            "export/on-demand", {"dataset": dataset_name, "out_dir": str(a_file)},
            f"out_dir (--out): {a_file} is a file; the export is a folder"),
        "export folder inside the sources": (
            "export/on-demand",
            {"dataset": dataset_name, "out_dir": export_dir, "config_path": str(with_sources)},
            f"out_dir (--out): {export_dir} is inside the source folder {photos}"),
        "end-to-end export folder inside the sources": (
            "bootstrap/end-to-end",
            {"dataset": dataset_name, "sources": [str(photos)], "config_path": PLAIN_CONFIG,
             "export_dir": export_dir},
            f"out_dir (--out): {export_dir} is inside the source folder {photos}"),
    }
    runs = {}
    for case, (deployment, parameters, _) in failing.items():
        answer = served.create_run(deployment, parameters)
        assert answer.status_code == 201, (case, answer.text)
        runs[case] = answer.json()["id"]
    for case, run in runs.items():
        state = served.wait_done(run, timeout=300)
        message = state.get("message") or ""
        assert state["type"] == "FAILED", (case, state)
        assert failing[case][2] in message, (case, message, served.api.logs(run)[-2000:])
        seen[case] = message.removeprefix("Flow run encountered an exception: ")
    # Before any work: no dataset was created, no image registered, nothing exported.
    assert not fo.dataset_exists(dataset_name)
    assert not (photos / "export").exists() and a_file.read_text() == "not a folder\n"
    for case, message in seen.items():
        report_case(f"bad-parameter: {case}", seen=str(message),
                    lost="nothing: refused before any work (no dataset, no file written)")


def test_commands_name_their_database_without_its_password(tmp_path):
    """A MongoDB URI with credentials: the error naming the database hides the password."""
    import subprocess

    from tests.integration.processes import BOOTSTRAP

    env = dict(os.environ, FIFTYONE_DATABASE_URI=f"mongodb://ana:s3cret-pw@127.0.0.1:{free_port()}"
               "/?serverSelectionTimeoutMS=1500")
    env.pop("FIFTYONE_DATABASE_DIR", None)
    done = subprocess.run([BOOTSTRAP, "doctor", "--json"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert "mongodb://ana:***@127.0.0.1" in done.stdout
