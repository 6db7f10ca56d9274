"""Provider and model names as spendlake stores them (contract 1).

The rule: a provider is stored lower-case under one canonical name, whatever alias the emitter or
LiteLLM used; a model is stored as billed, minus a leading ``provider/`` that only repeats the
provider. Nothing else is rewritten here: dated snapshots and Bedrock region prefixes
(``us.``, ``eu.``, ``apac.``, ``global.``) stay in the stored model, because regional Bedrock
endpoints and snapshots can be priced differently. Stripping them is a *lookup* fallback and
lives in ``Catalog.resolve``.
"""

from __future__ import annotations

# Alias -> canonical provider. Distinct products stay distinct even when the vendor is the same
# (azure_ai is Azure AI Foundry's serverless catalogue, not Azure OpenAI; codestral has its own
# endpoint and prices), because merging them would price one product with another's list.
PROVIDER_ALIASES: dict[str, str] = {
    "vertex_ai": "vertex",
    "vertex_ai_beta": "vertex",
    "vertexai": "vertex",
    "google_vertex": "vertex",
    "google_vertex_ai": "vertex",
    "bedrock_converse": "bedrock",
    "aws_bedrock": "bedrock",
    "amazon_bedrock": "bedrock",
    "azure_openai": "azure",
    "azure_text": "azure",
    "google_ai_studio": "gemini",
    "google_genai": "gemini",
    "gemini": "gemini",
    "mistralai": "mistral",
    "mistral_ai": "mistral",
    "together_ai": "together",
    "togetherai": "together",
    "together.ai": "together",
    "x-ai": "xai",
    "x_ai": "xai",
    "deepseek-ai": "deepseek",
    "deepseek_ai": "deepseek",
    "text-completion-openai": "openai",
    "cohere_chat": "cohere",
    "fireworks_ai-embedding-models": "fireworks_ai",
}

# LiteLLM names Vertex sub-catalogues "vertex_ai-<family>" (vertex_ai-language-models,
# vertex_ai-anthropic_models, ...); all of them are billed by Vertex.
_VERTEX_PREFIX = "vertex_ai-"


def canonical_provider(name: str) -> str:
    """The canonical lower-case provider name for ``name`` (unknown names are only lower-cased)."""
    key = name.strip().lower()
    if key.startswith(_VERTEX_PREFIX):
        return "vertex"
    return PROVIDER_ALIASES.get(key, key)


def split_model(provider: str, model: str) -> tuple[str, str]:
    """``(canonical provider, model)`` with the leading ``provider/`` removed from the model.

    The prefix (repeated or not) is removed only when it names the same provider (directly or through an alias):
    ``("openai", "openai/gpt-4o") -> ("openai", "gpt-4o")``, ``("vertex_ai",
    "vertex_ai/gemini-2.5-pro") -> ("vertex", "gemini-2.5-pro")``. A prefix naming something
    else is part of the model name (``("openrouter", "anthropic/claude-…")`` keeps it), and the
    model's case is kept because providers bill case-sensitive ids (Together's
    ``meta-llama/Llama-3.3-70B-Instruct-Turbo``).
    """
    canonical = canonical_provider(provider)
    model = model.strip()
    while True:  # a repeated prefix goes too: perplexity/perplexity/sonar is sonar (as LiteLLM)
        head, sep, rest = model.partition("/")
        if not (sep and rest and canonical_provider(head) == canonical):
            return canonical, model
        model = rest
