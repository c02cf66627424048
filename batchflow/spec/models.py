"""The models batchflow knows can run batch jobs, per backend and task, beside the limits table (``limits.py``).

Taken from Google's model pages and batch documentation (Gemini API "Batch Mode" and "Models"; Vertex AI "Batch
inference with Gemini" and "Get batch text embeddings") as of 2026-11. New models appear monthly: a name that is
not here is only a warning, unless it is one or two edits from a known one (then it is almost surely a typo).
``plan`` on a real backend (or the emulator) also asks the service itself (``models.get``).

Embedding models come in two families with different batch lines (docs/google-apis.md, "Embeddings"): Vertex's
legacy text-embedding instance (``{"content": "..."}``, text-embedding-005 and its kin) and the Gemini embedding
request (``{"key", "request": {"content": {"parts"}, "embed_content_config"}}``, gemini-embedding-*). A model not in
the table takes its family's format by its name (``embedding_of``), with a warning: no list gates a new model.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from batchflow import logs

log = logs.get_logger(__name__)


@dataclass(frozen=True)
class Model:
    name: str
    task: str  # generate | embed | live (a model the service lists that takes no batch jobs)
    backends: frozenset[str]  # gemini (and local, its stand-in) | vertex
    input_tokens: int  # the model's input-token limit, per request
    output_tokens: int  # its output-token limit (0 for embeddings)
    thinks: bool = False  # spends thinking tokens by default
    embedding: Embedding | None = None  # task embed: the line format, sizes and places of the model


@dataclass(frozen=True)
class Embedding:
    """What an embedding model takes beyond the generic entry: its Vertex line format, the task type's place, the
    sizes it gives, where Vertex runs its batch jobs and how many rows and bytes a Vertex job may hold."""

    format: str  # request: the Gemini embedding line | instance: the legacy text-embedding instance
    task_in_text: bool = False  # task type and title go into a prefix of the text, not into the config
    dimensions: tuple[int, int, int] = (128, 3072, 3072)  # smallest, largest and default output_dimensionality
    vertex_locations: tuple[str, ...] | None = None  # documented order; None: the service decides
    vertex_rows: int = 30_000  # rows of one Vertex batch job
    vertex_bytes: int = 1_000_000_000  # bytes of one Vertex job's input file
    vertex_queue_hours: float = 24.0  # how long a healthy Vertex job may stay queued
    vertex_bigquery: bool = True  # Vertex reads its input from a BigQuery table
    media: MediaCaps | None = None  # what media one request may hold; None: the model embeds text alone


@dataclass(frozen=True)
class MediaCaps:
    """What media one embed request of a multimodal embedding model may hold: its MIME types, and per request how
    many images, PDFs (and their pages), videos and audio files (and their seconds)."""

    mime_types: frozenset[str]
    images: int
    documents: int
    pages: int  # of one PDF
    videos: int
    video_seconds: float  # of one video
    audios: int
    audio_seconds: float  # of one audio file


# Gemini Embedding 2's media, per request (Vertex "Gemini Embedding 2" model page,
# https://docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/embedding-2, read 2026-12-07): up to 6
# images (image/png, image/jpeg); 1 PDF of up to 6 pages; 1 video (video/mp4, video/mpeg) of up to 120 s without an
# audio track (80 s with one: batchflow reads no audio track from a header, so the longer bound is checked and the
# service has the last word on the shorter); audio up to 80 s (MP3, WAV) from Google's launch post of 2026-03-10
# (the model page's audio row was not legible in the copy read), one file a request as for video and PDF. Text goes
# with them (interleaved: one vector for the whole request), within the 8,192 input tokens.
EMBEDDING_2_MEDIA = MediaCaps(
    mime_types=frozenset({"image/png", "image/jpeg", "application/pdf", "video/mp4", "video/mpeg", "audio/mp3",
                          "audio/wav"}),
    images=6, documents=1, pages=6, videos=1, video_seconds=120.0, audios=1, audio_seconds=80.0)


# Vertex "Get batch embeddings inferences" (https://docs.cloud.google.com/gemini-enterprise-agent-platform/models/
# embeddings/batch-prediction-genai-embeddings, read 2026-12-07): JSONL on Cloud Storage only (no BigQuery tables),
# up to 1,000,000 rows and a 1 GB input file a job, queued up to 72 h (target under 24 h); gemini-embedding-001 in
# us-central1, us-east1, us-east4, us-west1, us-west4, europe-west1, europe-west4, gemini-embedding-2 in global, us,
# eu; 001 takes task type and title in embed_content_config, 2 "inlined directly within the prompt".
# Dimensions 128-3072 (default 3072): Gemini API "Embeddings" (https://ai.google.dev/gemini-api/docs/embeddings,
# read 2026-12-07), which also says vectors below 3072 are not normalised; the Gemini API's gemini-embedding-001
# model page (https://ai.google.dev/gemini-api/docs/models/gemini-embedding-001, updated 2026-02-18, read 2026-12-07)
# gives "128 - 3072, recommended 768, 1536, 3072". No page words the service's 400 for a size outside it.
# A Gemini embedding model not in the table is taken to be multimodal as gemini-embedding-2 is (the newest of the
# family; the service refuses media a model does not take); gemini-embedding-001 embeds text alone (Gemini API
# "Embeddings": "For text-only use cases, gemini-embedding-001 remains available", read 2026-12-07).
_GEMINI_EMBEDDING = Embedding("request", vertex_rows=1_000_000, vertex_queue_hours=72.0, vertex_bigquery=False,
                              media=EMBEDDING_2_MEDIA)
_EMBEDDING_001 = dataclasses.replace(_GEMINI_EMBEDDING, media=None, vertex_locations=(
    "us-central1", "us-east1", "us-east4", "us-west1", "us-west4", "europe-west1", "europe-west4"))
_EMBEDDING_2 = dataclasses.replace(_GEMINI_EMBEDDING, task_in_text=True,
                                   vertex_locations=("global", "us", "eu"))
# Vertex "Get batch text embeddings" (the seed's page, read 2026-12-07): 30,000 prompts a job; text-embedding-005's
# output_dimensionality is 1-768 (768 by default), its input 2,048 tokens.
_TEXT_EMBEDDING = Embedding("instance", dimensions=(1, 768, 768))


_BOTH = frozenset({"gemini", "vertex"})
_GEMINI = frozenset({"gemini"})
_VERTEX = frozenset({"vertex"})

MODELS: tuple[Model, ...] = (
    Model("gemini-3-pro-preview", "generate", _BOTH, 1_048_576, 65_536, thinks=True),
    Model("gemini-3-flash-preview", "generate", _BOTH, 1_048_576, 65_536, thinks=True),
    Model("gemini-2.5-pro", "generate", _BOTH, 1_048_576, 65_536, thinks=True),
    Model("gemini-2.5-flash", "generate", _BOTH, 1_048_576, 65_536, thinks=True),
    Model("gemini-2.5-flash-lite", "generate", _BOTH, 1_048_576, 65_536),
    Model("gemini-2.0-flash", "generate", _BOTH, 1_048_576, 8_192),
    Model("gemini-2.0-flash-001", "generate", _VERTEX, 1_048_576, 8_192),
    Model("gemini-2.0-flash-lite", "generate", _BOTH, 1_048_576, 8_192),
    Model("gemini-2.0-flash-lite-001", "generate", _VERTEX, 1_048_576, 8_192),
    # input tokens: 2,048 for gemini-embedding-001, 8,192 for gemini-embedding-2 (Gemini API "Embeddings", 2026-12-07)
    Model("gemini-embedding-001", "embed", _BOTH, 2_048, 0, embedding=_EMBEDDING_001),
    Model("gemini-embedding-2", "embed", _BOTH, 8_192, 0, embedding=_EMBEDDING_2),
    Model("text-embedding-004", "embed", _VERTEX, 2_048, 0, embedding=_TEXT_EMBEDDING),
    Model("text-embedding-005", "embed", _VERTEX, 2_048, 0, embedding=_TEXT_EMBEDDING),
    Model("text-multilingual-embedding-002", "embed", _VERTEX, 2_048, 0, embedding=_TEXT_EMBEDDING),
)

# Models the services list that take no batch jobs: kept so that a stand-in lists them and refuses batches on them,
# as the real services do, and a client can be tested refusing them too.
NOT_BATCH: tuple[Model, ...] = (
    Model("gemini-2.0-flash-live-001", "live", _BOTH, 1_048_576, 8_192),
)

_BY_NAME = {m.name: m for m in MODELS}
_LISTED = {m.name: m for m in (*MODELS, *NOT_BATCH)}


def bare(name: str) -> str:
    """``models/x``, ``publishers/google/models/x`` and ``projects/../models/x`` -> ``x``."""
    return name.rsplit("/", 1)[-1]


def known(name: str, backend: str, task: str) -> Model | None:
    """The table's entry for a model on a backend (``local`` is the gemini backend's stand-in) and task."""
    model = _BY_NAME.get(bare(name))
    surface = "gemini" if backend == "local" else backend
    if model is None or surface not in model.backends or model.task != task:
        return None
    return model


def any_named(name: str) -> Model | None:
    return _BY_NAME.get(bare(name))


def embedding_of(name: str) -> Embedding:
    """An embedding model's formats and limits: the table's, or (a model it does not have) its family's by name,
    with a warning: ``text-embedding-*`` / ``text-multilingual-embedding-*`` take the legacy instance, anything else
    (``gemini-embedding-*`` and what comes after it) the Gemini embedding request."""
    model = _BY_NAME.get(bare(name))
    if model is not None and model.embedding is not None:
        return model.embedding
    return _family(bare(name))


@functools.cache
def _family(name: str) -> Embedding:
    legacy = name.startswith(("text-embedding", "text-multilingual-embedding", "textembedding"))
    family = _TEXT_EMBEDDING if legacy else _GEMINI_EMBEDDING
    log.warning("embedding model not in batchflow's table: its format and limits are taken from its family",
                model=name, family="text-embedding (legacy instance)" if legacy else "gemini-embedding (request)")
    return family


def listed(surface: str) -> list[Model]:
    """Every model a service lists on a surface (gemini | vertex), batch-capable or not, in table order."""
    return [m for m in (*MODELS, *NOT_BATCH) if surface in m.backends]


def listed_named(name: str, surface: str) -> Model | None:
    """The model a service lists on a surface under `name` (any resource-name form), batch-capable or not."""
    model = _LISTED.get(bare(name))
    return model if model is not None and surface in model.backends else None


def near_misses(name: str, backend: str, task: str) -> list[str]:
    """Known models one or two edits from ``name`` (not ``name`` itself), nearest first."""
    wanted = bare(name)
    found = [(distance(wanted, m.name), m.name) for m in MODELS
             if known(m.name, backend, task) is not None and m.name != wanted]
    return [n for d, n in sorted(found) if d <= 2]


def nearest(name: str, backend: str, task: str, count: int = 3) -> list[str]:
    """The ``count`` known models of a backend and task nearest to ``name`` (by edits), nearest first: what an
    unknown model is most likely meant to be."""
    wanted = bare(name)
    found = sorted((distance(wanted, m.name), m.name) for m in MODELS
                   if known(m.name, backend, task) is not None and m.name != wanted)
    return [n for _, n in found[:count]]


def nearest_hint(name: str, backend: str, task: str) -> str:
    """``"; the nearest known: a, b, c"`` for a message about a model the service does not know."""
    near = nearest(name, backend, task)
    return f"; the nearest known {task} models on {backend}: {', '.join(near)}" if near else ""


def distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (optimal string alignment): a swap of two neighbours is one edit."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


CHARS_PER_TOKEN = 4  # the estimate used everywhere before a model counts (plan's token figure too)


def prompt_bytes(name: str, backend: str, task: str, auto_truncate: bool | None = None) -> int:
    """The request-line size over which a request surely exceeds the model's input-token limit (estimated at
    four bytes a token); unbounded for a model not in the table, and for an embedding the service truncates
    (Vertex does, unless ``embed_config.auto_truncate`` is false; the Gemini API has no such option)."""
    model = known(name, backend, task)
    if model is None:
        return 1 << 62
    if task == "embed" and backend == "vertex" and auto_truncate is not False:
        return 1 << 62
    return model.input_tokens * CHARS_PER_TOKEN


def too_long(name: str, line_bytes: int) -> str:
    model = _BY_NAME[bare(name)]
    what = "text" if model.task == "embed" else "prompt"
    return (f"the {what} is about {line_bytes // CHARS_PER_TOKEN:,} tokens (estimate), over {model.name}'s input "
            f"limit of {model.input_tokens:,}; not sent")


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens at the online rate; a batch job is billed ``batch_discount`` less (half, today)."""

    input: float
    output: float
    thinking: float  # thinking tokens are billed at the output rate
    batch_discount: float = 0.5


# Standard (paid tier) prices for prompts up to 200k tokens, taken on this date from the pages below; the Gemini API
# and Vertex AI bill Gemini models alike except where the Vertex row says otherwise. A spec's `pricing:` overrides
# any field (a model not here must give its own). Vertex's text-embedding models bill per character: not priced.
PRICES_TAKEN = "2025-12"
PRICE_SOURCES = {"gemini": "https://ai.google.dev/gemini-api/docs/pricing",
                 "vertex": "https://cloud.google.com/vertex-ai/generative-ai/pricing"}


def _price(input_usd: float, output_usd: float) -> Price:
    return Price(input_usd, output_usd, output_usd)


_GEMINI_PRICES: dict[str, Price] = {
    "gemini-3-pro-preview": _price(2.00, 12.00),
    "gemini-3-flash-preview": _price(0.50, 3.00),
    "gemini-2.5-pro": _price(1.25, 10.00),
    "gemini-2.5-flash": _price(0.30, 2.50),
    "gemini-2.5-flash-lite": _price(0.10, 0.40),
    "gemini-2.0-flash": _price(0.10, 0.40),
    "gemini-2.0-flash-lite": _price(0.075, 0.30),
    "gemini-embedding-001": _price(0.15, 0.0),
}

PRICES: dict[tuple[str, str], Price] = {
    **{("gemini", name): price for name, price in _GEMINI_PRICES.items()},
    **{("vertex", name): price for name, price in _GEMINI_PRICES.items() if name != "gemini-embedding-001"},
    ("vertex", "gemini-2.0-flash"): _price(0.15, 0.60),
    ("vertex", "gemini-2.0-flash-001"): _price(0.15, 0.60),
    ("vertex", "gemini-2.0-flash-lite-001"): _price(0.075, 0.30),
}


def price_of(name: str, backend: str) -> Price | None:
    """The table's price of a model on a backend (``local`` is priced as the gemini backend it stands in for)."""
    return PRICES.get(("gemini" if backend == "local" else backend, bare(name)))
