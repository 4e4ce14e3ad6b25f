"""A stand-in for the rate limit service (`envoyproxy/ratelimit`), for tests:
a gRPC server implementing `envoy.service.ratelimit.v3.RateLimitService/
ShouldRateLimit` on 127.0.0.1 that records every call and answers by a
settable policy.

The envoyproxy/ratelimit binary cannot be installed here (no container
registry, no Go module of it), and no PyPI package ships Envoy's generated
protos for grpcio, so the messages are built at run time from descriptors
written out below. Field numbers and types are those of
`api/envoy/service/ratelimit/v3/rls.proto` and
`api/envoy/extensions/common/ratelimit/v3/ratelimit.proto` (Envoy 1.40);
fields Envoy's filter does not use here are left out (protobuf skips unknown
fields when parsing, so leaving some out is safe):

    RateLimitRequest   { string domain = 1; repeated RateLimitDescriptor descriptors = 2;
                         uint32 hits_addend = 3; }
    RateLimitDescriptor { repeated Entry entries = 1; RateLimitOverride limit = 2;
                          google.protobuf.UInt64Value hits_addend = 3; }
    Entry              { string key = 1; string value = 2; }
    RateLimitResponse  { Code overall_code = 1; repeated DescriptorStatus statuses = 2;
                         repeated HeaderValue response_headers_to_add = 3;
                         repeated HeaderValue request_headers_to_add = 4; bytes raw_body = 5; }
    DescriptorStatus   { Code code = 1; RateLimit current_limit = 2; uint32 limit_remaining = 3;
                         google.protobuf.Duration duration_until_reset = 4; }
    RateLimit          { uint32 requests_per_unit = 1; Unit unit = 2; string name = 3; }
    Code               { UNKNOWN = 0; OK = 1; OVER_LIMIT = 2; }

Policy (all settable while running):
- `mode`: "count" (default) answers OVER_LIMIT for a descriptor once the
  hits recorded for it (sum of its effective hits_addend, envoyproxy/
  ratelimit's rule: the descriptor's own hits_addend if set — 0 means check
  only —, else max(1, the request's hits_addend)) pass `limits[key]`, where
  key is the descriptor's entries as a tuple of (key, value) pairs; "ok"
  always answers OK; "over" always answers OVER_LIMIT; "fail" aborts every
  call with UNAVAILABLE.
- `delay`: seconds to sleep before answering.
"""
from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory, wrappers_pb2

F = descriptor_pb2.FieldDescriptorProto


def _field(msg, name, number, ftype, *, label=F.LABEL_OPTIONAL, type_name=None):
    f = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    # The well-known types the messages refer to.
    for mod in (wrappers_pb2, duration_pb2):
        fdp = descriptor_pb2.FileDescriptorProto()
        mod.DESCRIPTOR.CopyToProto(fdp)
        pool.Add(fdp)

    common = descriptor_pb2.FileDescriptorProto(
        name="envoy/extensions/common/ratelimit/v3/ratelimit.proto",
        package="envoy.extensions.common.ratelimit.v3", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    desc = common.message_type.add(name="RateLimitDescriptor")
    entry = desc.nested_type.add(name="Entry")
    _field(entry, "key", 1, F.TYPE_STRING)
    _field(entry, "value", 2, F.TYPE_STRING)
    override = desc.nested_type.add(name="RateLimitOverride")
    _field(override, "requests_per_unit", 1, F.TYPE_UINT32)
    _field(override, "unit", 2, F.TYPE_INT32)  # envoy.type.v3.RateLimitUnit (an enum: varint)
    _field(desc, "entries", 1, F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
           type_name=".envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry")
    _field(desc, "limit", 2, F.TYPE_MESSAGE,
           type_name=".envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.RateLimitOverride")
    _field(desc, "hits_addend", 3, F.TYPE_MESSAGE, type_name=".google.protobuf.UInt64Value")
    pool.Add(common)

    rls = descriptor_pb2.FileDescriptorProto(
        name="envoy/service/ratelimit/v3/rls.proto", package="envoy.service.ratelimit.v3",
        syntax="proto3",
        dependency=["envoy/extensions/common/ratelimit/v3/ratelimit.proto",
                    "google/protobuf/duration.proto"])
    hv = rls.message_type.add(name="HeaderValue")  # envoy.config.core.v3.HeaderValue's wire shape
    _field(hv, "key", 1, F.TYPE_STRING)
    _field(hv, "value", 2, F.TYPE_STRING)
    req = rls.message_type.add(name="RateLimitRequest")
    _field(req, "domain", 1, F.TYPE_STRING)
    _field(req, "descriptors", 2, F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
           type_name=".envoy.extensions.common.ratelimit.v3.RateLimitDescriptor")
    _field(req, "hits_addend", 3, F.TYPE_UINT32)
    resp = rls.message_type.add(name="RateLimitResponse")
    code = resp.enum_type.add(name="Code")
    for i, n in enumerate(("UNKNOWN", "OK", "OVER_LIMIT")):
        code.value.add(name=n, number=i)
    rl = resp.nested_type.add(name="RateLimit")
    unit = rl.enum_type.add(name="Unit")
    for i, n in enumerate(("UNKNOWN", "SECOND", "MINUTE", "HOUR", "DAY", "MONTH", "YEAR")):
        unit.value.add(name=n, number=i)
    _field(rl, "requests_per_unit", 1, F.TYPE_UINT32)
    _field(rl, "unit", 2, F.TYPE_ENUM,
           type_name=".envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit")
    _field(rl, "name", 3, F.TYPE_STRING)
    st = resp.nested_type.add(name="DescriptorStatus")
    _field(st, "code", 1, F.TYPE_ENUM, type_name=".envoy.service.ratelimit.v3.RateLimitResponse.Code")
    _field(st, "current_limit", 2, F.TYPE_MESSAGE,
           type_name=".envoy.service.ratelimit.v3.RateLimitResponse.RateLimit")
    _field(st, "limit_remaining", 3, F.TYPE_UINT32)
    _field(st, "duration_until_reset", 4, F.TYPE_MESSAGE, type_name=".google.protobuf.Duration")
    _field(resp, "overall_code", 1, F.TYPE_ENUM,
           type_name=".envoy.service.ratelimit.v3.RateLimitResponse.Code")
    _field(resp, "statuses", 2, F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
           type_name=".envoy.service.ratelimit.v3.RateLimitResponse.DescriptorStatus")
    _field(resp, "response_headers_to_add", 3, F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
           type_name=".envoy.service.ratelimit.v3.HeaderValue")
    _field(resp, "request_headers_to_add", 4, F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
           type_name=".envoy.service.ratelimit.v3.HeaderValue")
    _field(resp, "raw_body", 5, F.TYPE_BYTES)
    svc = rls.service.add(name="RateLimitService")
    svc.method.add(name="ShouldRateLimit",
                   input_type=".envoy.service.ratelimit.v3.RateLimitRequest",
                   output_type=".envoy.service.ratelimit.v3.RateLimitResponse")
    pool.Add(rls)
    return pool


POOL = _build_pool()
RateLimitRequest = message_factory.GetMessageClass(
    POOL.FindMessageTypeByName("envoy.service.ratelimit.v3.RateLimitRequest"))
RateLimitResponse = message_factory.GetMessageClass(
    POOL.FindMessageTypeByName("envoy.service.ratelimit.v3.RateLimitResponse"))
RateLimitDescriptor = message_factory.GetMessageClass(
    POOL.FindMessageTypeByName("envoy.extensions.common.ratelimit.v3.RateLimitDescriptor"))
OK, OVER_LIMIT = 1, 2
METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

Key = tuple[tuple[str, str], ...]


@dataclass
class Descriptor:
    entries: Key
    #: The descriptor's own hits_addend, None when Envoy did not set it.
    hits_addend: int | None

    def get(self, key: str) -> str | None:
        return dict(self.entries).get(key)


@dataclass
class Call:
    """One ShouldRateLimit call as the server received it."""
    domain: str
    descriptors: list[Descriptor]
    #: The request-level hits_addend (0 when unset).
    hits_addend: int
    #: What the server answered: OK or OVER_LIMIT (None: aborted).
    answer: int | None = None
    at: float = field(default_factory=time.monotonic)

    def keys(self) -> list[Key]:
        return [d.entries for d in self.descriptors]


def effective_hits(d: Descriptor, call: Call) -> int:
    """envoyproxy/ratelimit's rule (src/utils/utilities.go GetHitsAddends)."""
    if d.hits_addend is not None:
        return d.hits_addend
    return max(1, call.hits_addend)


class RlsServer:
    """The test RLS on 127.0.0.1, a free port, in threads of this process."""

    def __init__(self):
        self.calls: list[Call] = []
        self.mode = "count"
        self.limits: dict[Key, int] = {}
        self.delay = 0.0
        self.hits: dict[Key, int] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.unary_unary_rpc_method_handler(
            self._should_rate_limit,
            request_deserializer=RateLimitRequest.FromString,
            response_serializer=lambda m: m.SerializeToString())
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "envoy.service.ratelimit.v3.RateLimitService", {"ShouldRateLimit": handler}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    # ------------------------------------------------------------ policy

    def reset(self, *, mode: str = "count", limits: dict[Key, int] | None = None,
              delay: float = 0.0) -> None:
        with self._lock:
            self.calls.clear()
            self.hits.clear()
            self.mode = mode
            self.limits = dict(limits or {})
            self.delay = delay

    # ------------------------------------------------------------ recordings

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def wait_for(self, pred, timeout: float = 5.0) -> list[Call]:
        """Wait until pred(calls) is true; returns the calls then (or fails)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.calls):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"RLS: condition not met in {timeout}s; calls: {self.calls}")
                self._cond.wait(left)
            return list(self.calls)

    def settle(self, quiet: float = 0.3, timeout: float = 3.0) -> None:
        """Wait until no call came for `quiet` seconds (stream-done calls
        arrive after the client has its answer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                last = max((c.at for c in self.calls), default=0.0)
            if time.monotonic() - last >= quiet:
                return
            time.sleep(0.05)

    # ------------------------------------------------------------ rpc

    def _should_rate_limit(self, request, context):
        call = Call(
            domain=request.domain,
            descriptors=[Descriptor(tuple((e.key, e.value) for e in d.entries),
                                    d.hits_addend.value if d.HasField("hits_addend") else None)
                         for d in request.descriptors],
            hits_addend=request.hits_addend)
        with self._lock:
            mode, delay = self.mode, self.delay
        if delay:
            time.sleep(delay)
        resp = RateLimitResponse()
        with self._cond:
            if mode == "fail":
                self.calls.append(call)
                self._cond.notify_all()
                context.abort(grpc.StatusCode.UNAVAILABLE, "test RLS: failing on purpose")
            overall = OK
            for d in call.descriptors:
                n = self.hits.get(d.entries, 0) + effective_hits(d, call)
                self.hits[d.entries] = n
                limit = self.limits.get(d.entries)
                over = mode == "over" or (mode == "count" and limit is not None and n > limit)
                st = resp.statuses.add(code=OVER_LIMIT if over else OK)
                if limit is not None:
                    st.current_limit.requests_per_unit = limit
                    st.current_limit.unit = 2  # MINUTE
                    st.limit_remaining = max(0, limit - n)
                    st.duration_until_reset.seconds = 60 - int(time.time()) % 60
                if over:
                    overall = OVER_LIMIT
            resp.overall_code = overall
            call.answer = overall
            self.calls.append(call)
            self._cond.notify_all()
        return resp

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)


def ask(port: int, domain: str, descriptors: list[list[tuple[str, str]]],
        hits_addend: int = 0, per_descriptor: list[int | None] | None = None):
    """A client call (for checking the server itself)."""
    req = RateLimitRequest(domain=domain, hits_addend=hits_addend)
    for i, entries in enumerate(descriptors):
        d = req.descriptors.add()
        for k, v in entries:
            d.entries.add(key=k, value=v)
        if per_descriptor and per_descriptor[i] is not None:
            d.hits_addend.value = per_descriptor[i]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = ch.unary_unary(METHOD, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=RateLimitResponse.FromString)
        return stub(req, timeout=5)
