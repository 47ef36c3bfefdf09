"""The test servers themselves: PostgreSQL, S3 and ``mlflow server`` answer, MLflow records land in
the database and its artifacts in the bucket, and a stack stopped after a failure leaves no process."""

from __future__ import annotations

import pytest
import servers

pytestmark = [pytest.mark.servers, pytest.mark.timeout(600)]


def test_mlflow_server_records_in_postgres_and_proxies_artifacts_to_s3(server_stack, tmp_path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(server_stack.tracking_uri)
    experiment = client.create_experiment("servers-smoke")
    run = client.create_run(experiment, tags={"prometar.trial_key": "abc123"})
    (tmp_path / "prompts.txt").write_text("tensors")
    client.log_artifacts(run.info.run_id, str(tmp_path))
    client.log_metric(run.info.run_id, "loss", 0.5, step=1)
    client.set_terminated(run.info.run_id, "FINISHED")

    assert server_stack.runs("servers-smoke") == [(run.info.run_id, "FINISHED", "abc123")]
    keys = server_stack.s3.keys(server_stack.bucket, "mlartifacts/")
    assert f"mlartifacts/{experiment}/{run.info.run_id}/artifacts/prompts.txt" in keys
    # the client never talked to S3 itself: the artifact URI is the server's proxy
    assert client.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:")


def test_servers_listen_on_loopback_only(server_stack) -> None:
    import psutil

    ports = {server_stack.postgres.port, server_stack.s3.port, server_stack.mlflow.port}
    listening = {
        conn.laddr.port: conn.laddr.ip
        for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports
    }
    assert set(listening) == ports
    assert set(listening.values()) == {"127.0.0.1"}


def test_a_failing_test_leaves_no_server_process(tmp_path) -> None:
    root = tmp_path.parent / f"{tmp_path.name}-stack"
    marker = f"failing-{root.name}"
    root.mkdir()
    started: list[servers.ServerProcess] = []
    with pytest.raises(RuntimeError, match="the test failed"):
        try:
            started.append(servers.start_s3(root, marker).process)
            assert servers.marked(marker), "the S3 server carries the marker"
            raise RuntimeError("the test failed")
        finally:
            for process in started:
                process.stop()
    assert servers.wait_until(lambda: not servers.marked(marker), 15, "the S3 server to exit")
