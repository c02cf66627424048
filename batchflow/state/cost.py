"""What jobs cost: an estimate before they run, the actual cost from ``usageMetadata`` after, and the budget.

The budget bounds *committed* spend: jobs already answered count at their actual usage, jobs created and not yet
answered at their estimate. A job is created only if that, plus its own estimate, stays within ``budget:``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchflow.errors import RunFailed, SpecError
from batchflow.spec import models
from batchflow.spec.spec import Spec
from batchflow.state import state as st
from batchflow.state.state import Job, State

# What a request is assumed to give when the spec does not bound it (docs/cost.md, "The estimate"): a short answer,
# and, for a model that thinks by default, a moderate amount of thinking.
ASSUMED_OUTPUT_TOKENS = 256
ASSUMED_THINKING_TOKENS = 1024


@dataclass(frozen=True)
class Usage:
    """Tokens billed: input (prompt), output (candidates) and thinking (thoughts)."""

    input: int = 0
    output: int = 0
    thinking: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input + other.input, self.output + other.output, self.thinking + other.thinking)

    def as_dict(self) -> dict[str, int]:
        return {"input": self.input, "output": self.output, "thinking": self.thinking}


class OverBudget(SpecError):
    """The plan's estimate is over ``budget:`` before anything was created: exit 2, nothing spent."""


class BudgetReached(RunFailed):
    """Jobs wait because the next one would go over ``budget:``: exit 1, the state kept; raise it and run again."""


def add_usage(total: list[int], response: Mapping[str, Any]) -> None:
    """One response's ``usageMetadata`` (promptTokenCount, candidatesTokenCount, thoughtsTokenCount) added to
    ``total`` (input, output, thinking) in place: a collection sums a job's answers line by line."""
    meta = response.get("usageMetadata")
    if meta:
        total[0] += int(meta.get("promptTokenCount", 0))
        total[1] += int(meta.get("candidatesTokenCount", 0))
        total[2] += int(meta.get("thoughtsTokenCount", 0))


def price(spec: Spec) -> models.Price | None:
    """The table's price for the spec's model and backend with ``pricing:`` over it; None if neither prices it."""
    table = models.price_of(spec.model, spec.backend.type)
    given = spec.pricing
    if table is None and not {"input_per_million", "output_per_million"} <= given.keys():
        return None
    base = table or models.Price(0.0, 0.0, 0.0)
    output = float(given.get("output_per_million", base.output))
    thinking = base.thinking if table is not None and "output_per_million" not in given else output
    return models.Price(float(given.get("input_per_million", base.input)), output,
                        float(given.get("thinking_per_million", thinking)),
                        float(given.get("batch_discount", base.batch_discount)))


def cost_usd(usage: Usage, rate: models.Price) -> float:
    """What the usage costs in a batch job, in USD."""
    online = usage.input * rate.input + usage.output * rate.output + usage.thinking * rate.thinking
    return online / 1e6 * (1 - rate.batch_discount)


@dataclass(frozen=True)
class PerRequest:
    """The output and thinking tokens a request is estimated to give, and how each figure was come by (``plan``
    says it: docs/cost.md, "The estimate")."""

    output: int
    thinking: int
    output_basis: str
    thinking_basis: str

    @property
    def pair(self) -> tuple[int, int]:
        return self.output, self.thinking


@dataclass(frozen=True)
class Observed:
    """What answered requests gave on average: from the jobs already collected, of this generation or the last."""

    answered: int
    output: int
    thinking: int

    def mean(self, tokens: int) -> int:
        return round(tokens / self.answered)


def observed(state: State | None) -> Observed | None:
    """The mean output and thinking tokens of the state's answered requests; None before any was answered."""
    answered = output = thinking = 0
    for _, job in state.jobs() if state is not None else ():
        if job.usage is not None and job.ok > 0:
            answered += job.ok
            output += job.usage.get("output", 0)
            thinking += job.usage.get("thinking", 0)
    return Observed(answered, output, thinking) if answered else None


def per_request(spec: Spec, seen: Observed | None = None) -> PerRequest:
    """(output, thinking) tokens a request is estimated to give. Answers already collected (``seen``) say it best,
    bounded by what the spec caps; before any, the spec's caps (``max_output_tokens``, ``thinking_budget``) as
    upper bounds; else the model's documented default: no thinking for a model that does not think by default or a
    ``thinking_budget`` of 0, dynamic thinking (the assumption below) otherwise."""
    if spec.task != "generate":
        return PerRequest(0, 0, "embeddings give no output tokens", "embeddings do not think")
    config = _generation_config(spec)
    cap = _int(config.get("max_output_tokens", config.get("maxOutputTokens")))
    budget = _thinking_budget(config)
    model = models.any_named(spec.model)
    thinks = (model is not None and model.thinks) if budget is None else budget != 0  # -1: dynamic, asked for
    output, output_basis = _output(cap, seen)
    thinking, thinking_basis = _thinking(spec.model, thinks, budget, seen)
    return PerRequest(output, thinking, output_basis, thinking_basis)


def _output(cap: int | None, seen: Observed | None) -> tuple[int, str]:
    if seen is not None:
        mean = seen.mean(seen.output)
        return (min(mean, cap) if cap is not None else mean), f"the mean of {seen.answered:,} answers collected"
    if cap is not None:
        return cap, "generation_config.max_output_tokens (an upper bound)"
    return ASSUMED_OUTPUT_TOKENS, f"assumed {ASSUMED_OUTPUT_TOKENS:,} (no max_output_tokens, no answers yet)"


def _thinking(model: str, thinks: bool, budget: int | None, seen: Observed | None) -> tuple[int, str]:
    if not thinks:
        why = "thinking_budget 0" if budget == 0 else f"{model} does not think by default"
        return 0, why
    if seen is not None:
        mean = seen.mean(seen.thinking)
        bounded = min(mean, budget) if budget is not None and budget > 0 else mean
        return bounded, f"the mean of {seen.answered:,} answers collected"
    if budget is not None and budget > 0:
        return budget, "thinking_config.thinking_budget (an upper bound)"
    return ASSUMED_THINKING_TOKENS, (f"assumed {ASSUMED_THINKING_TOKENS:,}: {model} thinks dynamically by default "
                                     "and nothing was answered yet to measure it (bound it with "
                                     "thinking_config.thinking_budget)")


def _thinking_budget(config: Mapping[str, Any]) -> int | None:
    thinking_config = config.get("thinking_config", config.get("thinkingConfig")) or {}
    if not isinstance(thinking_config, Mapping):
        return None
    return _int(thinking_config.get("thinking_budget", thinking_config.get("thinkingBudget")))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _generation_config(spec: Spec) -> Mapping[str, Any]:
    if spec.generation_config:
        return spec.generation_config
    if isinstance(spec.request, Mapping):
        found = spec.request.get("generation_config", spec.request.get("generationConfig"))
        return found if isinstance(found, Mapping) else {}
    return {}


def estimate(job: Job, each: tuple[int, int]) -> Usage:
    """A job's usage before it ran: its input's estimated tokens, ``each`` request's output and thinking."""
    return Usage(job.tokens, job.count * each[0], job.count * each[1])


def job_usage(job: Job, each: tuple[int, int]) -> Usage:
    """The job's actual usage once collected, else its estimate."""
    if job.usage is not None:
        return Usage(**job.usage)
    return estimate(job, each)


def created(job: Job) -> bool:
    """Created at the service (or maybe created: "submitting"), so paid for or about to be."""
    return job.name is not None or job.status == st.SUBMITTING


@dataclass(frozen=True)
class Spend:
    """A generation's usage and cost: what is committed (created jobs) and what the rest would add."""

    actual: Usage  # jobs collected: their answers' usageMetadata
    committed: Usage  # actual + jobs created and not collected, at their estimate
    planned: Usage  # committed + jobs not created yet, at their estimate
    rate: models.Price | None

    def usd(self, usage: Usage) -> float | None:
        return None if self.rate is None else cost_usd(usage, self.rate)

    def as_dict(self) -> dict[str, Any]:
        return {f"{name}_tokens": getattr(self, name).as_dict() for name in ("actual", "committed", "planned")} | {
            f"{name}_usd": self.usd(getattr(self, name)) for name in ("actual", "committed", "planned")}


def spend(spec: Spec, state: State, earlier: State | None = None) -> Spend:
    """The generation's spend, job by job: jobs not collected at the estimate that the answers collected so far
    give (this generation's, else ``earlier``'s)."""
    each = per_request(spec, observed(state) or observed(earlier)).pair
    actual = committed = planned = Usage()
    for _, job in state.jobs():
        usage = job_usage(job, each)
        planned += usage
        if created(job):
            committed += usage
        if job.usage is not None:
            actual += usage
    return Spend(actual, committed, planned, price(spec))


def check_priced(spec: Spec) -> None:
    """A cost budget needs a price: a model the table does not price must give one in ``pricing:``."""
    if spec.budget.max_cost_usd is not None and price(spec) is None:
        raise SpecError(f"{spec.where('budget')}: budget.max_cost_usd: the price table has no price for "
                        f"{spec.model} on {spec.backend.type}; give pricing: {{input_per_million: .., "
                        "output_per_million: ..}}")


def over_budget(spec: Spec, usage: Usage) -> str | None:
    """Which cap ``usage`` would pass, said in one phrase; None within budget."""
    budget = spec.budget
    if budget.max_input_tokens is not None and usage.input > budget.max_input_tokens:
        return f"{usage.input:,} input tokens, over budget.max_input_tokens {budget.max_input_tokens:,}"
    rate = price(spec)
    if budget.max_cost_usd is not None and rate is not None and cost_usd(usage, rate) > budget.max_cost_usd:
        return f"${cost_usd(usage, rate):,.4f}, over budget.max_cost_usd ${budget.max_cost_usd:,.4f}"
    return None


def check_plan(spec: Spec, state: State, earlier: State | None = None) -> None:
    """Before any job of the generation is created: the whole plan must fit, or nothing is (exit 2)."""
    check_priced(spec)
    if any(created(job) for _, job in state.jobs()):
        return
    problem = over_budget(spec, spend(spec, state, earlier).planned)
    if problem is not None:
        raise OverBudget(f"{spec.where('budget')}: budget: the plan's estimate is {problem}; nothing was created "
                         "(raise the budget, or send fewer records)")


def admits(spec: Spec, state: State, job: Job) -> str | None:
    """Why ``job`` may not be created now (committed spend plus its estimate over budget); None if it may."""
    if not spec.budget.capped:
        return None
    return over_budget(spec, spend(spec, state).committed + estimate(job, per_request(spec, observed(state)).pair))
