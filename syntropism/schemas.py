"""The System Service's wire format: what agents send and receive (Pydantic only, so the SDK can share it).

Credits travel as decimal strings (``"12.5"``); an integer is accepted in a request, a binary float never is.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, model_validator

from syntropism.domain.identity import AGENT_ID_PATTERN, MAX_AGENT_ID_LENGTH
from syntropism.domain.models import CreditsInput, Resource, ResourceBundle, credits_text

AgentId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_AGENT_ID_LENGTH,
        pattern=AGENT_ID_PATTERN,
        description="A plain name: letters, digits, '.', '_', '-', starting with a letter or digit",
    ),
]
CreditsIn = Annotated[
    CreditsInput,
    Field(
        description='Credits as a decimal string such as "12.5" (at most 64 characters) or a JSON integer; '
        "floats and booleans are refused"
    ),
]


Money = Annotated[Decimal, PlainSerializer(credits_text, return_type=str, when_used="json")]
"""Credits out: a decimal string without trailing zeros, ``"12.5"``."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorBody(Model):
    error: str = Field(description="The kind of failure: unauthorized, forbidden, payment_required, not_found, …")
    reason: str = Field(description="A stable code, e.g. insufficient_funds, token_expired, idempotency_conflict")
    detail: str = Field(description="What went wrong, in words")


# --- economic ------------------------------------------------------------------------------------------------


class BalanceOut(Model):
    agent_id: str
    available: Money
    locked: Money


class TransferIn(Model):
    to_agent: AgentId
    amount: CreditsIn
    purpose: Annotated[str, Field(max_length=500)] | None = None


class ReceiptOut(Model):
    transfer_id: str
    kind: str
    amount: Money
    debit_account: str
    credit_account: str
    debit_balance_after: Money
    credit_balance_after: Money
    reference: str | None
    memo: str | None
    created_at: datetime
    replayed: bool = False


class HistoryOut(Model):
    entries: list[ReceiptOut]
    next_before: int | None = Field(description="Pass as `before` for the next, older page; null on the last")


# --- market --------------------------------------------------------------------------------------------------


class ResourceStateOut(Model):
    resource: Resource
    price: Decimal = Field(description="Credits per 100 %-capacity-second, from the last cycle's winning bids")
    utilization: Decimal
    supply: Decimal
    cycle: int


class BidOut(Model):
    bid_id: str
    agent_id: str
    on_behalf_of: str | None = None
    amount: Money
    status: str
    bundle: ResourceBundle | None = None
    cycles_remaining: int | None = None
    replayed: bool = False


class MarketStateOut(Model):
    cycle: int
    resources: list[ResourceStateOut]
    own_bids: list[BidOut] = Field(description="Your pending bids")


class BidIn(Model):
    bundle: ResourceBundle
    amount: CreditsIn
    lifetime_cycles: Annotated[int, Field(ge=1, le=1000)] | None = None
    on_behalf_of: AgentId | None = Field(None, description="Bid for another agent, to wake it; you pay")


# --- social --------------------------------------------------------------------------------------------------


class MessageIn(Model):
    to_agent: AgentId
    body: Annotated[str, Field(min_length=1, max_length=20_000)]


class MessageOut(Model):
    message_id: str
    from_agent: str
    to_agent: str
    body: str
    sent_at: datetime
    replayed: bool = False


class RewardOut(Model):
    prompt_id: str
    interesting: int
    useful: int
    understandable: int
    credits: Money


class InboxOut(Model):
    messages: list[MessageOut]
    rewards: list[RewardOut] = Field(default_factory=list, description="Your prompts the human scored since")
    next_after: str | None = Field(None, description="More messages wait: pass as `after` for the next page")


class SpawnIn(Model):
    agent_id: AgentId
    source: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        ".", description="A file or folder in your workspace: the child's code"
    )
    entry_point: Annotated[str, Field(min_length=1, max_length=255)] = "main.py"
    funds: CreditsIn = Field("0", description="Credits you transfer to the child")
    name: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class SpawnOut(Model):
    agent_id: str
    parent_id: str
    funds: Money
    transfer_id: str | None
    replayed: bool = False


# --- attention and intelligence (their issues fill these in) --------------------------------------------------


class PromptIn(Model):
    text: Annotated[str, Field(min_length=1, max_length=20_000)]
    attachments: list[Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=list, description="Files in your workspace for the human to look at"
    )


class PromptOut(Model):
    prompt_id: str
    agent_id: str
    text: str
    attachments: list[str]
    status: Literal["pending", "scored", "expired"]
    created_at: datetime
    expires_at: datetime
    attention_seconds: float = Field(description="What it cost of the execution's attention share")
    interesting: int | None = None
    useful: int | None = None
    understandable: int | None = None
    credits: Money | None = None
    replayed: bool = False


class ScoreIn(Model):
    interesting: Annotated[int, Field(ge=0, le=10)]
    useful: Annotated[int, Field(ge=0, le=10)]
    understandable: Annotated[int, Field(ge=0, le=10)]


# The parts of a chat completion request, each closed and bounded (see InferenceIn).


class ChatTextPart(Model):
    type: Literal["text"]
    text: Annotated[str, Field(max_length=500_000)]


class ChatCalledFunction(Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    arguments: Annotated[str, Field(max_length=500_000)]


class ChatToolCall(Model):
    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal["function"] = "function"
    function: ChatCalledFunction


class ChatMessage(Model):
    role: Literal["system", "user", "assistant", "tool"]
    content: (
        Annotated[str, Field(max_length=500_000)]
        | Annotated[list[ChatTextPart], Field(min_length=1, max_length=64)]
        | None
    ) = None
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    tool_calls: Annotated[list[ChatToolCall], Field(max_length=128)] | None = None
    tool_call_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None


class ChatFunctionSpec(Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    description: Annotated[str, Field(max_length=100_000)] | None = None
    parameters: dict[str, Any] | None = Field(None, description="A JSON Schema; only local `$ref`s ('#/…')")
    strict: bool | None = None


class ChatTool(Model):
    type: Literal["function"]
    function: ChatFunctionSpec


class ChatFunctionName(Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class ChatNamedToolChoice(Model):
    type: Literal["function"]
    function: ChatFunctionName


class ChatJsonSchemaFormat(Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: Annotated[str, Field(max_length=100_000)] | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema", description="Only local `$ref`s ('#/…')")
    strict: bool | None = None


class ChatResponseFormat(Model):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: ChatJsonSchemaFormat | None = None


class ChatStreamOptions(Model):
    include_usage: bool | None = Field(None, description="Usage is always included: it is what is charged")


class InferenceIn(Model):
    """An OpenAI-compatible chat completion request, closed: each field is typed and bounded, and is either
    metered (its tokens are reserved before the request goes upstream) or cannot make the upstream spend more.
    Any other field is refused (422), and so are image, audio and file parts: the upstream would fetch them
    from the network on behalf of an agent that has none."""

    model: Annotated[str, Field(max_length=200)] | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1024)]
    max_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = Field(
        None,
        description="The most each choice may write. Default: 1024, or less when what is left of the quota or "
        "what the system-wide bucket ever holds is less",
    )
    max_completion_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = Field(
        None, description="The same as max_tokens (give one, or both equal)"
    )
    n: Annotated[int, Field(ge=1, le=8)] | None = Field(None, description="Choices to write: reserves n × max_tokens")
    stream: bool = False
    stream_options: ChatStreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    stop: (
        Annotated[str, Field(min_length=1, max_length=1000)]
        | Annotated[list[Annotated[str, Field(min_length=1, max_length=1000)]], Field(max_length=4)]
        | None
    ) = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    tools: Annotated[list[ChatTool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | ChatNamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: Annotated[list[ChatFunctionSpec], Field(max_length=128)] | None = Field(
        None, description="Deprecated by OpenAI in favour of tools; metered alike"
    )
    function_call: Literal["none", "auto"] | ChatFunctionName | None = None
    response_format: ChatResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_fields_and_text_only(cls, data: Any) -> Any:
        """Refuse, with the reason, what is not forwarded: unknown fields and parts that are not text."""
        if not isinstance(data, dict):
            return data
        unknown = sorted(str(name) for name in data if name not in cls.model_fields)
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(unknown)}: only the chat completion fields the proxy meters are "
                f"accepted ({', '.join(cls.model_fields)})"
            )
        messages = data.get("messages")
        for i, message in enumerate(messages if isinstance(messages, list) else []):
            content = message.get("content") if isinstance(message, dict) else None
            for j, part in enumerate(content if isinstance(content, list) else []):
                kind = part.get("type") if isinstance(part, dict) else None
                where = f"messages[{i}].content[{j}]"
                if kind in ("image_url", "image", "input_image") or (isinstance(part, dict) and "image_url" in part):
                    raise ValueError(
                        f"{where}: image parts are refused: the upstream would fetch the image from the network on "
                        "behalf of an agent that has none; send text parts only"
                    )
                if isinstance(part, dict) and kind != "text":
                    raise ValueError(f"{where}: {kind!r} parts are refused: only text parts are accepted")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> InferenceIn:
        """One completion bound, and JSON Schemas that reference nothing outside themselves."""
        if self.max_tokens and self.max_completion_tokens and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens differ: give one of them")
        schemas = [
            (f"tools[{i}].function.parameters", tool.function.parameters) for i, tool in enumerate(self.tools or [])
        ]
        schemas += [(f"functions[{i}].parameters", spec.parameters) for i, spec in enumerate(self.functions or [])]
        if self.response_format is not None and self.response_format.json_schema is not None:
            schemas.append(("response_format.json_schema.schema", self.response_format.json_schema.json_schema))
        for where, schema in schemas:
            stack: list[tuple[Any, int]] = [(schema, 0)]
            while stack:
                node, depth = stack.pop()
                if depth > 64:
                    raise ValueError(f"{where}: nested deeper than 64 levels")
                if isinstance(node, dict):
                    ref = node.get("$ref")
                    if isinstance(ref, str) and not ref.startswith("#"):
                        raise ValueError(
                            f"{where}: $ref {ref[:200]!r} is refused: only local references ('#/…') are accepted; "
                            "the upstream would fetch it from the network on behalf of an agent that has none"
                        )
                    stack.extend((value, depth + 1) for value in node.values())
                elif isinstance(node, list):
                    stack.extend((value, depth + 1) for value in node)
        return self


# --- admin ---------------------------------------------------------------------------------------------------


class AgentIn(Model):
    agent_id: AgentId
    name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    files: dict[Annotated[str, Field(min_length=1, max_length=255)], str] = Field(
        default_factory=dict, description="Path in the workspace → content; the agent's code"
    )
    entry_point: Annotated[str, Field(min_length=1, max_length=255)] = "main.py"
    initial_grant: CreditsIn = "0"


class AgentOut(Model):
    agent_id: str
    name: str
    status: Literal["active", "dormant", "died"]
    parent_id: str | None
    entry_point: str
    available: Money
    locked: Money
    created_at: datetime


class ExecutionOut(Model):
    execution_id: str
    agent_id: str
    status: str
    reason: str | None
    bid_id: str | None
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    signal: int | None
    cpu_seconds: float | None
    peak_memory_bytes: int | None


class AgentDetailOut(Model):
    agent: AgentOut
    executions: list[ExecutionOut]
    pending_bids: list[BidOut]


class GrantIn(Model):
    agent_id: AgentId
    amount: CreditsIn
    reason: Annotated[str, Field(max_length=500)] = "operator grant"


class RewardIn(Model):
    agent_id: AgentId
    interesting: Annotated[int, Field(ge=0, le=10)]
    useful: Annotated[int, Field(ge=0, le=10)]
    understandable: Annotated[int, Field(ge=0, le=10)]
    prompt_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class AdminBidIn(BidIn):
    agent_id: AgentId = Field(description="Who pays (and runs, unless on_behalf_of is given)")
