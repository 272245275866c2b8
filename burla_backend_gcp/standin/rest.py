"""How the stand-in reads a REST request and writes its answer: routes, strict messages, errors.

A route is built from the Google client library's own HTTP rule for the method (the
`_get_http_options()` of its `rest_base` module: verb, URI template, body field), so the
stand-in answers exactly the paths the real client sends. The request message is then built the
way Google's HTTP/JSON transcoding builds it: the body parsed into the body field, the URI's
variables and the query parameters into the rest. Parsing is strict (`ignore_unknown_fields`
off, and every enum checked against its declared values, including Compute's string enums), so a
field the real API lacks or a wrong enum is answered `400 INVALID_ARGUMENT`, which the clients
raise as `google.api_core.exceptions.BadRequest`. Responses are serialized from the same message
types. Errors carry Google's shape (`error.code`, `message`, `status`, `errors`, `details` with a
`google.rpc.ErrorInfo`), so `google.api_core` raises the same typed exception it raises against
Google.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import parse_qs

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

# HTTP status → the canonical status name Google puts in `error.status`.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
    501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
# Compute's own `errors[].reason` for the same statuses (GCE's v1 error bodies carry both).
_COMPUTE_REASONS = {
    400: "invalid", 401: "required", 403: "forbidden", 404: "notFound", 409: "alreadyExists",
    412: "conditionNotMet", 429: "rateLimitExceeded", 503: "backendError",
}
# Query parameters every Google REST API accepts and the stand-in ignores.
_SYSTEM_PARAMETERS = frozenset({"$alt", "alt", "prettyPrint", "fields", "key", "quotaUser", "$fields"})


class ApiError(Exception):
    """An error answer: HTTP `code`, Google's status name, and an optional ErrorInfo."""

    def __init__(self, code: int, message: str, *, status: str | None = None, reason: str | None = None,
                 domain: str = "googleapis.com", metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or _STATUS_NAMES.get(code, HTTPStatus(code).phrase.upper().replace(" ", "_"))
        self.reason = reason
        self.domain = domain
        self.metadata = metadata or {}

    def body(self) -> dict:
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "errors": [{"message": self.message, "domain": "global",
                        "reason": _COMPUTE_REASONS.get(self.code, self.status.lower())}],
        }
        if self.reason:
            error["details"] = [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": self.reason, "domain": self.domain, "metadata": self.metadata,
            }]
        return {"error": error}


def not_found(resource: str) -> ApiError:
    return ApiError(404, f"The resource '{resource}' was not found")


def already_exists(resource: str) -> ApiError:
    return ApiError(409, f"The resource '{resource}' already exists")


def invalid(message: str) -> ApiError:
    return ApiError(400, message)


# ---------------------------------------------------------------- strict messages


def pb_class(message_type: type) -> type[Message]:
    """The protobuf class of a proto-plus class (or the class itself if it is one already)."""
    return message_type.pb() if hasattr(message_type, "pb") else message_type


def parse_strict(text: str | bytes, pb: Message) -> Message:
    """Parse JSON into `pb` refusing unknown fields and unknown enum values (400 otherwise)."""
    try:
        json_format.Parse(text or b"{}", pb, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise invalid(f"Invalid JSON payload received. {exc}") from None
    check_enums(pb)
    return pb


def _repeated(fd: FieldDescriptor) -> bool:
    # protobuf 6+ has `is_repeated`; older releases only `label`.
    repeated = getattr(fd, "is_repeated", None)
    return bool(repeated) if repeated is not None else fd.label == FieldDescriptor.LABEL_REPEATED


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def check_enums(pb: Message, where: str = "") -> None:
    """Refuse enum values the API does not declare. Proto3 enums are open (an unknown number
    parses), and Compute declares its enums as strings beside a nested enum of the same name, so
    neither is caught by the parser alone."""
    descriptor = pb.DESCRIPTOR
    for fd, value in pb.ListFields():
        path = f"{where}.{fd.json_name}" if where else fd.json_name
        repeated = _repeated(fd)
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.GetOptions().map_entry:
                value_fd = fd.message_type.fields_by_name["value"]
                if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                    for key, item in value.items():
                        check_enums(item, f"{path}[{key}]")
                continue
            for index, item in enumerate(value if repeated else [value]):
                check_enums(item, f"{path}[{index}]" if repeated else path)
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            for item in value if repeated else [value]:
                if fd.enum_type.values_by_number.get(item) is None:
                    raise invalid(f"Invalid value at '{path}' ({fd.enum_type.full_name}), {item}")
        elif fd.type == FieldDescriptor.TYPE_STRING and descriptor.full_name.startswith("google.cloud.compute."):
            enum = descriptor.enum_types_by_name.get(_camel(fd.name))
            if enum is None:
                continue
            allowed = [v.name for v in enum.values if not v.name.startswith("UNDEFINED_")]
            for item in value if repeated else [value]:
                if item not in allowed:
                    raise invalid(f"Invalid value for field '{path}': '{item}'. "
                                  f"Allowed values: {', '.join(allowed)}.")


def to_json(message: Any, *, enums_as_ints: bool = False) -> bytes:
    """Serialize a proto-plus or protobuf message the way the REST API does (camelCase, no
    default values)."""
    pb = type(message).pb(message) if hasattr(type(message), "pb") else message
    return json_format.MessageToJson(pb, use_integers_for_enums=enums_as_ints, indent=None).encode()


# ---------------------------------------------------------------- routes


@dataclass
class Call:
    """One request as a handler sees it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    member: str = ""  # the caller, from its bearer token ("user:…", "serviceAccount:…")
    enums_as_ints: bool = False  # the client asked `$alt=json;enum-encoding=int`
    full_path: str = ""  # path and query as sent (for forwarding)
    raw_headers: dict[str, str] | None = None  # headers as sent, original case (for forwarding)
    route: str = ""  # the name of the route that answered


Handler = Callable[[Call, Any], Any]


@dataclass
class Route:
    method: str
    pattern: re.Pattern
    variables: list[str]  # field paths, in group order
    body_field: str | None
    request_type: type | None  # proto-plus or protobuf class; None: the handler reads the raw call
    handler: Callable
    service: str  # the API it belongs to ("compute.googleapis.com"), for the enabled check
    name: str  # "compute.instances.insert", for fault injection and logs
    raw_pb: bool = False
    pass_match: bool = False  # hand-written routes: the handler also gets the path's regex match


def compile_template(template: str) -> tuple[re.Pattern, list[str]]:
    """`/v2/{name=projects/*/services/*}:getIamPolicy` → a regex and the variables' field paths."""
    variables: list[str] = []
    out = ["^"]
    position = 0
    for match in re.finditer(r"\{([\w.]+)(?:=([^}]*))?\}", template):
        out.append(re.escape(template[position:match.start()]))
        variables.append(match.group(1))
        segments = (match.group(2) or "*").split("/")
        pieces = ["[^:]+" if s == "**" else "[^/:]+" if s == "*" else re.escape(s) for s in segments]
        out.append(f"(?P<v{len(variables) - 1}>{'/'.join(pieces)})")
        position = match.end()
    out.append(re.escape(template[position:]) + "$")
    return re.compile("".join(out)), variables


def rule_of(rest_base_method: type, index: int = 0) -> dict:
    """The HTTP rule the client library itself uses for a method."""
    return rest_base_method._get_http_options()[index]


def make_route(rule: dict, request_type: type | None, handler: Callable, *, service: str, name: str) -> Route:
    pattern, variables = compile_template(rule["uri"])
    return Route(rule["method"].upper(), pattern, variables, rule.get("body"), request_type, handler,
                 service, name, raw_pb=request_type is not None and not hasattr(request_type, "pb"))


def _set_path(pb: Message, field_path: str, value: str) -> None:
    *parents, last = field_path.split(".")
    target = pb
    for part in parents:
        target = getattr(target, part)
    setattr(target, last, value)


def _query_dict(descriptor: Descriptor, query: dict[str, list[str]]) -> dict:
    """Query parameters (json names, dotted for nested fields) as a dict json_format can parse."""
    out: dict[str, Any] = {}
    for key, values in query.items():
        if key in _SYSTEM_PARAMETERS or key.startswith("$"):
            continue
        desc, target, parts = descriptor, out, key.split(".")
        for depth, part in enumerate(parts):
            fd = desc.fields_by_camelcase_name.get(part) or desc.fields_by_name.get(part)
            if fd is None:
                raise invalid(f"Invalid JSON payload received. Unknown name \"{key}\": Cannot bind query parameter.")
            if depth < len(parts) - 1:
                target = target.setdefault(fd.json_name, {})
                desc = fd.message_type
            else:
                repeated = _repeated(fd)
                target[fd.json_name] = values if repeated else values[-1]
    return out


def build_request(route: Route, match: re.Match, call: Call) -> Any:
    """The request message, transcoded from the body, the URI's variables and the query."""
    if route.request_type is None:
        return None
    pb = pb_class(route.request_type)()
    if route.body_field == "*":
        parse_strict(call.body, pb)
    elif route.body_field:
        parse_strict(call.body, getattr(pb, route.body_field))
    for index, field_path in enumerate(route.variables):
        _set_path(pb, field_path, match.group(f"v{index}"))
    query = _query_dict(pb.DESCRIPTOR, call.query)
    if query:
        extra = type(pb)()
        try:
            json_format.ParseDict(query, extra, ignore_unknown_fields=False)
        except json_format.ParseError as exc:
            raise invalid(f"Invalid query parameter: {exc}") from None
        check_enums(extra)
        pb.MergeFrom(extra)
    if route.raw_pb:
        return pb
    return route.request_type.wrap(pb)


def parse_query(raw: str) -> dict[str, list[str]]:
    return parse_qs(raw, keep_blank_values=True)



def routes_for(rest_base_method: type, request_type: type | None, handler: Callable, *, service: str,
               name: str) -> list[Route]:
    """A route for every HTTP rule of a method (some have a `locations/*` variant too)."""
    return [make_route(rule, request_type, handler, service=service, name=name)
            for rule in rest_base_method._get_http_options()]
