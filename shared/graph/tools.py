"""Tools of the worker agents: arithmetic, unit conversion, dates and times, and an approved action.

Every tool returns a plain string the model can read, and reports bad input as a string that starts
with ``error:`` instead of raising, so a model's malformed call never fails the run.
"""

from __future__ import annotations

import ast
import math
import operator
import uuid
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from langchain_core.tools import tool
from langgraph.types import interrupt

_MAX_EXPRESSION_CHARS = 200
_MAX_EXPONENT = 1_000
_MAX_MAGNITUDE = 1e100

_BINARY: dict[type[ast.operator], Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Any] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))  # type: ignore[no-any-return]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        # Bound exponents and sizes so an expression like 9**9**9 cannot pin the worker's CPU.
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ValueError(f"exponent {right} is larger than {_MAX_EXPONENT}")
        result = _BINARY[type(node.op)](left, right)
        if abs(result) > _MAX_MAGNITUDE:
            raise ValueError("result is too large")
        return result  # type: ignore[no-any-return]
    raise ValueError("only numbers, + - * / // % ** and parentheses are allowed")


def _format_number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


@tool
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / // % ** and parentheses, e.g. '(2 + 3) * 4'."""
    text = expression.replace("^", "**").replace("×", "*").replace("÷", "/").strip()
    if not text or len(text) > _MAX_EXPRESSION_CHARS:
        return f"error: the expression must be 1 to {_MAX_EXPRESSION_CHARS} characters"
    try:
        value = _evaluate(ast.parse(text, mode="eval"))
    except ZeroDivisionError:
        return "error: division by zero"
    except (SyntaxError, ValueError, TypeError, OverflowError) as err:
        return f"error: cannot evaluate {expression!r}: {err}"
    if isinstance(value, float) and not math.isfinite(value):
        return "error: the result is not a finite number"
    return f"{expression.strip()} = {_format_number(value)}"


# Factor to the base unit of each dimension (metre, kilogram, litre).
_LINEAR_UNITS: dict[str, tuple[str, float]] = {
    "mm": ("length", 0.001),
    "cm": ("length", 0.01),
    "m": ("length", 1.0),
    "km": ("length", 1000.0),
    "in": ("length", 0.0254),
    "ft": ("length", 0.3048),
    "yd": ("length", 0.9144),
    "mi": ("length", 1609.344),
    "g": ("mass", 0.001),
    "kg": ("mass", 1.0),
    "lb": ("mass", 0.45359237),
    "oz": ("mass", 0.028349523125),
    "ml": ("volume", 0.001),
    "l": ("volume", 1.0),
    "gal": ("volume", 3.785411784),
}
_ALIASES = {
    "meter": "m",
    "meters": "m",
    "metre": "m",
    "metres": "m",
    "kilometer": "km",
    "kilometers": "km",
    "mile": "mi",
    "miles": "mi",
    "foot": "ft",
    "feet": "ft",
    "inch": "in",
    "inches": "in",
    "yard": "yd",
    "yards": "yd",
    "gram": "g",
    "grams": "g",
    "kilogram": "kg",
    "kilograms": "kg",
    "kgs": "kg",
    "pound": "lb",
    "pounds": "lb",
    "lbs": "lb",
    "ounce": "oz",
    "ounces": "oz",
    "liter": "l",
    "liters": "l",
    "litre": "l",
    "litres": "l",
    "gallon": "gal",
    "gallons": "gal",
    "celsius": "c",
    "°c": "c",
    "fahrenheit": "f",
    "°f": "f",
    "kelvin": "k",
}
_TEMPERATURES = {"c", "f", "k"}


def _to_kelvin(value: float, unit: str) -> float:
    if unit == "c":
        return value + 273.15
    if unit == "f":
        return (value - 32) * 5 / 9 + 273.15
    return value


def _from_kelvin(value: float, unit: str) -> float:
    if unit == "c":
        return value - 273.15
    if unit == "f":
        return (value - 273.15) * 9 / 5 + 32
    return value


def normalize_unit(unit: str) -> str:
    key = unit.strip().lower()
    return _ALIASES.get(key, key)


@tool
def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a value between units of length, mass, volume or temperature (e.g. 5 km to mi, 20 c to f)."""
    source, target = normalize_unit(from_unit), normalize_unit(to_unit)
    if source in _TEMPERATURES and target in _TEMPERATURES:
        result = _from_kelvin(_to_kelvin(value, source), target)
    elif source in _LINEAR_UNITS and target in _LINEAR_UNITS:
        source_dimension, source_factor = _LINEAR_UNITS[source]
        target_dimension, target_factor = _LINEAR_UNITS[target]
        if source_dimension != target_dimension:
            return f"error: cannot convert {source_dimension} ({from_unit}) to {target_dimension} ({to_unit})"
        result = value * source_factor / target_factor
    else:
        known = ", ".join(sorted([*_LINEAR_UNITS, *_TEMPERATURES]))
        return f"error: unknown unit {from_unit!r} or {to_unit!r}; known units: {known}"
    return f"{_format_number(value)} {from_unit} = {_format_number(round(result, 6))} {to_unit}"


@tool
def current_time(timezone_name: str = "UTC") -> str:
    """Tell the current date and time in an IANA time zone such as 'Europe/Madrid' or 'UTC'."""
    try:
        zone = ZoneInfo(timezone_name.strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return f"error: unknown time zone {timezone_name!r}; use an IANA name like 'Europe/Madrid'"
    now = datetime.now(UTC).astimezone(zone)
    return f"It is {now:%Y-%m-%d %H:%M} in {zone.key} (UTC{now:%z})."


@tool
def days_between(start_date: str, end_date: str) -> str:
    """Count the days from start_date to end_date, both in YYYY-MM-DD form."""
    try:
        start, end = date.fromisoformat(start_date.strip()), date.fromisoformat(end_date.strip())
    except ValueError:
        return f"error: dates must be in YYYY-MM-DD form, got {start_date!r} and {end_date!r}"
    return f"There are {(end - start).days} days from {start} to {end}."


def _is_approval(decision: Any) -> bool:
    if isinstance(decision, bool):
        return decision
    if isinstance(decision, str):
        return decision.strip().lower() in ("yes", "y", "approve", "approved", "ok", "true")
    if isinstance(decision, dict):
        return decision.get("approved") is True
    return False


@tool
def book_meeting(title: str, meeting_date: str, attendees: list[str] | None = None) -> str:
    """Book a meeting on a date (YYYY-MM-DD). A person must approve the booking before it is made."""
    try:
        day = date.fromisoformat(meeting_date.strip())
    except ValueError:
        return f"error: meeting_date must be in YYYY-MM-DD form, got {meeting_date!r}"
    people = [a for a in (attendees or []) if isinstance(a, str)]

    # interrupt() stops the run here and saves it; the value given on resume comes back from the call.
    decision = interrupt(
        {
            "type": "approval",
            "action": "book_meeting",
            "title": title,
            "date": day.isoformat(),
            "attendees": people,
            "question": f"Book '{title}' on {day.isoformat()}? Resume with true to approve or false to refuse.",
        }
    )
    if not _is_approval(decision):
        return f"Not booked: the booking of '{title}' on {day.isoformat()} was refused by the reviewer."
    confirmation = uuid.uuid4().hex[:8]
    return f"Booked '{title}' on {day.isoformat()} (confirmation {confirmation})."


CALCULATOR_TOOLS = [calculate, convert_units]
SCHEDULER_TOOLS = [current_time, days_between, book_meeting]
