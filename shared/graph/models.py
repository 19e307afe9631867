"""Chat models for the agents, chosen by the MODEL_PROVIDER setting."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from shared.settings import Settings


def create_chat_model(settings: Settings, agent: str) -> BaseChatModel:
    """Create the chat model one agent uses.

    ``offline`` gives each agent its own rule-based stand-in; ``openai`` and ``azure_openai`` give
    every agent the same deployed model. Timeouts come from MODEL_TIMEOUT_SECONDS and a failed call
    is retried once, so a slow model fails well before the function's own timeout.
    """
    if settings.model_provider == "offline":
        from shared.graph.offline import OfflineChatModel

        return OfflineChatModel(
            agent=agent,
            delay_seconds=settings.offline_model_delay_ms / 1000,
            timeout_seconds=settings.model_timeout_seconds,
        )

    if settings.model_provider == "openai":
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=settings.openai_model,
            base_url=settings.openai_base_url,
            # Local OpenAI-compatible servers (Ollama, vLLM) accept any key; the client insists on one.
            api_key=settings.openai_api_key or "not-needed",  # type: ignore[arg-type]
            timeout=settings.model_timeout_seconds,
            max_retries=1,
            stream_usage=True,
        )

    from langchain_openai import AzureChatOpenAI

    if settings.azure_openai_api_key:
        return AzureChatOpenAI(
            azure_endpoint=settings.azure_openai_endpoint,
            azure_deployment=settings.azure_openai_deployment,
            api_version=settings.azure_openai_api_version,
            api_key=settings.azure_openai_api_key,  # type: ignore[arg-type]
            timeout=settings.model_timeout_seconds,
            max_retries=1,
            stream_usage=True,
        )

    # Without a key the app signs in as its managed identity (AZURE_CLIENT_ID selects a user-assigned one).
    from azure.identity import DefaultAzureCredential, get_bearer_token_provider

    token_provider = get_bearer_token_provider(DefaultAzureCredential(), "https://cognitiveservices.azure.com/.default")
    return AzureChatOpenAI(
        azure_endpoint=settings.azure_openai_endpoint,
        azure_deployment=settings.azure_openai_deployment,
        api_version=settings.azure_openai_api_version,
        azure_ad_token_provider=token_provider,
        timeout=settings.model_timeout_seconds,
        max_retries=1,
        stream_usage=True,
    )
