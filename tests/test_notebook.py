"""Live display in Jupyter: the example notebook run by a real kernel, and the fallback outside IPython."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

import h2o_sdk
from h2o_sdk import notebook
from h2o_sdk.testing import serve

EXAMPLE = Path(__file__).parents[1] / "examples" / "quickstart.ipynb"


class CountingClient(NotebookClient):  # type: ignore[misc]
    """Counts display updates, which nbclient applies in place to the existing output."""

    updates = 0

    def _update_display_id(self, display_id: str, msg: dict[str, Any]) -> None:
        CountingClient.updates += 1
        super()._update_display_id(display_id, msg)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("protocol", h2o_sdk.testing.PROTOCOLS)
def test_the_example_notebook_runs_and_updates_one_display_in_place(protocol: str) -> None:
    nb = nbformat.read(EXAMPLE, as_version=4)
    setup = nb.cells[1]
    assert 'protocol="0.10"' in setup.source  # the notebook's own choice; every family must run it
    setup.source = setup.source.replace('protocol="0.10"', f"protocol={protocol!r}")
    CountingClient.updates = 0
    resources = {"metadata": {"path": str(EXAMPLE.parent)}}
    CountingClient(nb, timeout=120, kernel_name="python3", resources=resources).execute()
    printed = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert h2o_sdk.testing.default_reply("<|prompt|>Name three rivers.<|endoftext|><|answer|>") in printed
    if protocol == "0.4":
        assert "eos_token" in printed  # finish_reason: only 0.4 reports details
    else:
        assert "takes no generation parameters" in printed
    assert f"the server speaks chat-ui protocol {protocol}" in printed
    shows = [cell for cell in nb.cells if cell.cell_type == "code" and "notebook.show" in cell.source]
    assert len(shows) == 2
    reply = h2o_sdk.testing.default_reply("<|prompt|>Write a haiku about rivers<|endoftext|><|answer|>")
    for cell in shows:
        displays = [out for out in cell.outputs if out.output_type == "display_data"]
        assert len(displays) == 1  # one output, updated in place, not one per token
        assert displays[0]["data"]["text/markdown"] != ""
    assert shows[0].outputs[0]["data"]["text/markdown"] == reply
    assert CountingClient.updates >= 4  # a few throttled updates and the final one


def test_outside_ipython_the_text_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with serve(pace=0, reply="Plain text here.") as server, h2o_sdk.Client(server.url) as client:
        reply = notebook.show(client, "Hi")
    assert reply.text == "Plain text here." and capsys.readouterr().out == "Plain text here.\n"
