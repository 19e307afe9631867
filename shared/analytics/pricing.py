"""Estimated model cost from the MODEL_PRICES setting."""

from __future__ import annotations

from decimal import Decimal

from shared.settings import ModelPrice, Settings

_PER_MILLION = Decimal(1_000_000)


def find_price(settings: Settings, model_name: str) -> ModelPrice | None:
    """Return the price of ``model_name``, or of the configured model, or None when neither has one.

    Providers report the model that answered, which can differ from the configured name: OpenAI
    adds a date (``gpt-4o-mini-2024-07-18``) and Azure OpenAI reports the model behind a
    deployment. So an unlisted reported name falls back to the configured model or deployment name.
    """
    prices = settings.model_prices
    if model_name in prices:
        return prices[model_name]
    return prices.get(settings.model_name)


def estimate_cost(price: ModelPrice, input_tokens: int, output_tokens: int) -> Decimal:
    """Return the cost in US dollars of the given tokens at ``price``."""
    input_cost = Decimal(str(price.input_per_million)) * input_tokens
    output_cost = Decimal(str(price.output_per_million)) * output_tokens
    return (input_cost + output_cost) / _PER_MILLION
