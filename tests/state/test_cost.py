"""Cost and budget: the estimate `plan` shows, the actual cost from usageMetadata, and the budget that bounds both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import genai_client
from support.helpers import cli, read_rows, write_jsonl, write_spec

from batchflow.spec import models
from batchflow.state import cost

# One output token and no thinking a request, estimated; the emulator answers with more: actual > estimate.
SHORT = {"max_output_tokens": 1, "thinking_config": {"thinking_budget": 0}}
THREE_JOBS = {"max_requests": 2, "max_concurrent": 1, "poll_interval": "0.2s"}


def _records(tmp_path: Path, count: int = 6) -> None:
    write_jsonl(tmp_path / "data/in.jsonl",
                [{"id": f"r{i}", "text": "a fine product, would buy again " * 3} for i in range(count)])


def _json(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_the_summary_cost_is_usage_metadata_times_the_price_table(tmp_path: Path) -> None:
    _records(tmp_path)
    spec = write_spec(tmp_path, jobs=THREE_JOBS)
    summary = _json(cli("run", "--json", str(spec)))
    rows = read_rows(tmp_path / "out/result.jsonl")
    prompt, output = (sum(r["usage"][f] for r in rows) for f in ("prompt_tokens", "output_tokens"))
    price = models.PRICES[("gemini", "gemini-2.5-flash")]
    assert summary["usage"] == {"input": prompt, "output": output, "thinking": 0}
    assert summary["cost_usd"] == pytest.approx((prompt * price.input + output * price.output) / 1e6 * 0.5)
    status = _json(cli("status", "--json", str(spec)))
    assert status["cost"]["actual_usd"] == pytest.approx(summary["cost_usd"])


def test_plan_estimates_cost_from_its_tokens_and_max_output_tokens(tmp_path: Path) -> None:
    _records(tmp_path)
    spec = write_spec(tmp_path, jobs=THREE_JOBS, generation_config={"max_output_tokens": 10},
                      pricing={"input_per_million": 1.0, "output_per_million": 2.0, "thinking_per_million": 3.0})
    plan = _json(cli("plan", "--json", str(spec)))
    tokens = plan["cost"]["planned_tokens"]
    assert tokens["output"] == 60 and tokens["thinking"] == 6 * cost.ASSUMED_THINKING_TOKENS  # 2.5-flash thinks
    assert plan["cost"]["planned_usd"] == pytest.approx(
        (tokens["input"] * 1.0 + 60 * 2.0 + tokens["thinking"] * 3.0) / 1e6 * 0.5)
    assert "cost (estimate): $" in cli("plan", str(spec)).stdout


def test_an_over_budget_plan_exits_2_and_creates_no_job(tmp_path: Path, emulator_url: str) -> None:
    _records(tmp_path)
    spec = write_spec(tmp_path, name="overbudget", backend={"type": "gemini", "base_url": emulator_url},
                      budget={"max_cost_usd": 0.000001})
    for command in ("plan", "run"):
        result = cli(command, str(spec))
        assert result.exit_code == 2, result.stderr
        assert "budget: the plan's estimate is $" in result.stderr and "nothing was created" in result.stderr
    client = genai_client(emulator_url)
    names = [job.display_name for job in client.batches.list(config={"page_size": 100})]
    assert not [n for n in names if n and "overbudget" in n]


def test_a_budget_reached_mid_run_stops_later_jobs_and_a_raised_one_finishes(tmp_path: Path) -> None:
    _records(tmp_path)
    planned = _json(cli("plan", "--json", str(write_spec(tmp_path, jobs=THREE_JOBS, generation_config=SHORT))))
    budget = planned["cost"]["planned_usd"] * 1.2  # the plan fits; the first job's actual answers do not leave room
    spec = write_spec(tmp_path, jobs=THREE_JOBS, generation_config=SHORT, budget={"max_cost_usd": budget})
    stopped = cli("run", str(spec))
    assert stopped.exit_code == 1 and "budget reached" in stopped.stderr, stopped.stderr
    state = json.loads((tmp_path / ".batchflow/t/state.json").read_text())
    created = [job for shard in state["shards"] for job in shard["jobs"] if job["name"]]
    assert len(created) == 1 and created[0]["usage"]["output"] > 2  # later shards were never submitted
    raised = write_spec(tmp_path, jobs=THREE_JOBS, generation_config=SHORT, budget={"max_cost_usd": 1.0})
    summary = _json(cli("run", "--json", str(raised)))
    assert summary["ok"] == 6 and summary["jobs"] == 3 and summary["cost_usd"] <= 1.0


def test_a_token_budget_counts_estimated_input_tokens(tmp_path: Path) -> None:
    _records(tmp_path)
    spec = write_spec(tmp_path, budget={"max_input_tokens": 10})
    result = cli("run", str(spec))
    assert result.exit_code == 2 and "over budget.max_input_tokens 10" in result.stderr


def test_a_cost_budget_on_an_unpriced_model_asks_for_pricing(tmp_path: Path) -> None:
    _records(tmp_path)
    spec = write_spec(tmp_path, model="gemini-9-unknown", budget={"max_cost_usd": 1})
    result = cli("validate", str(spec))
    assert result.exit_code == 2 and "give pricing:" in result.stderr
    priced = write_spec(tmp_path, model="gemini-9-unknown", budget={"max_cost_usd": 1},
                        pricing={"input_per_million": 1, "output_per_million": 4})
    assert cli("validate", str(priced)).exit_code == 0


def test_plan_json_after_a_run_says_finished_with_the_actual_cost(tmp_path: Path) -> None:
    _records(tmp_path)
    spec = write_spec(tmp_path)
    summary = _json(cli("run", "--json", str(spec)))
    plan = _json(cli("plan", "--json", str(spec)))
    assert plan["kind"] == "finished" and plan["submits"] is False and plan["records"] == 6
    assert plan["cost"]["actual_usd"] == pytest.approx(summary["cost_usd"])
    assert plan["cost"]["actual_tokens"] == plan["cost"]["committed_tokens"] == summary["usage"]


def _each(tmp_path: Path, **overrides: Any) -> cost.PerRequest:
    from batchflow.spec.spec import load_spec

    return cost.per_request(load_spec(write_spec(tmp_path, **overrides)))


def test_before_any_answer_thinking_follows_the_models_default_and_the_thinking_config(tmp_path: Path) -> None:
    lite = _each(tmp_path, model="gemini-2.5-flash-lite")
    assert lite.thinking == 0 and "does not think by default" in lite.thinking_basis
    dynamic = _each(tmp_path, model="gemini-2.5-flash")
    assert dynamic.thinking == cost.ASSUMED_THINKING_TOKENS and "dynamically" in dynamic.thinking_basis
    asked = _each(tmp_path, model="gemini-2.5-flash-lite",
                  generation_config={"thinking_config": {"thinking_budget": -1}})
    assert asked.thinking == cost.ASSUMED_THINKING_TOKENS  # -1 turns dynamic thinking on where it is off by default
    off = _each(tmp_path, generation_config={"thinking_config": {"thinking_budget": 0}})
    assert (off.thinking, off.thinking_basis) == (0, "thinking_budget 0")
    bounded = _each(tmp_path, generation_config={"thinkingConfig": {"thinkingBudget": 300}, "maxOutputTokens": 40})
    assert bounded.pair == (40, 300) and "upper bound" in bounded.thinking_basis and "upper bound" in \
        bounded.output_basis
    assumed = _each(tmp_path)
    assert assumed.output == cost.ASSUMED_OUTPUT_TOKENS and "assumed" in assumed.output_basis


def test_once_answers_are_collected_the_plan_estimates_from_their_mean(tmp_path: Path) -> None:
    _records(tmp_path)
    spec = write_spec(tmp_path, generation_config={"max_output_tokens": 5000})
    first = _json(cli("run", "--json", str(spec)))
    mean_output = round(first["usage"]["output"] / 6)
    mean_thinking = round(first["usage"]["thinking"] / 6)
    _records(tmp_path, count=9)  # three more: the next generation sends those
    plan = _json(cli("plan", "--json", str(spec)))
    assert plan["requests"] == 3
    assert plan["cost"]["per_request"] == {"output": mean_output, "thinking": mean_thinking}
    assert plan["cost"]["basis"]["output"] == "the mean of 6 answers collected"
    assert plan["cost"]["planned_tokens"]["output"] == 3 * mean_output < 3 * 5000  # not the cap any more
    assert "a request: the mean of 6 answers collected" in cli("plan", str(spec)).stdout
