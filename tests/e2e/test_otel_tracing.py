"""envoy/examples/otel-tracing.yaml: merged into the shipped config, Envoy
sends one span per request to an OTLP/gRPC collector, with the filter's
GenAI attributes (real token counts) and nothing of the conversation."""
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

import gw

EXAMPLE = Path(__file__).resolve().parents[2] / "envoy" / "examples" / "otel-tracing.yaml"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        with self.lock:
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    self.spans.extend(ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def attrs(self):
        with self.lock:
            return [{a.key: a.value.string_value for a in s.attributes} for s in self.spans]


@pytest.fixture
def collector():
    c = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(c, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    c.port = port
    yield c
    server.stop(0)


def with_tracing(port):
    example = yaml.safe_load(EXAMPLE.read_text())

    def mutate(doc):
        gw.hcm(doc)["tracing"] = example["tracing"]
        cl = example["clusters"][0]
        cl["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
            "socket_address"]["port_value"] = port
        doc["static_resources"]["clusters"].append(cl)
    return mutate


def test_spans_carry_genai_attributes(make_gateway, collector):
    g = make_gateway(mutate=with_tracing(collector.port))
    c = g.client()
    secret = gw.nonce("otel-secret-prompt")
    r = c.chat.completions.create(model="claude-haiku-4-5",
                                  messages=[{"role": "user", "content": secret}])
    deadline = time.monotonic() + 20
    mine = []
    while time.monotonic() < deadline and not mine:
        mine = [a for a in collector.attrs() if a.get("gen_ai.request.model") == "claude-haiku-4-5"]
        time.sleep(0.2)
    assert len(mine) == 1, "; ".join(",".join(f"{k}={v}" for k, v in sorted(x.items())) for x in collector.attrs())
    a = mine[0]
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.usage.input_tokens"] == str(r.usage.prompt_tokens)
    assert a["gen_ai.usage.output_tokens"] == str(r.usage.completion_tokens)
    assert a["llmgw.caller"] == "demo" and a["llmgw.quota"] == "admitted"
    assert int(a["llmgw.cost_usd_micros"]) > 0
    everything = repr(collector.spans)
    assert secret not in everything and gw.DEMO_KEY not in everything
