"""Hypothesis strategies for fuzzing the emulator: whole HTTP requests as bytes.

A request is drawn piece by piece (request line, query, headers, framing,
body), mostly close to what the API takes so that the fuzz reaches deep into
the server, with hostile values mixed in at every piece: illegal and
percent-encoded path segments, duplicated and malformed query parameters,
foreign ``Host`` and ``Origin``, wrong and conflicting ``Content-Length``,
bad chunking, mutated JSON, random bytes. Batch bodies (``multipart/mixed``)
are drawn from the same pieces, part by part (:func:`batch_requests`).

Nothing here knows the emulator's address: a request's head may hold
``{HOST}`` and ``{PORT}``, filled in by :meth:`RawRequest.render`. Bodies
never do, so their framing is final when drawn.

No strategy creates a retry test or sends ``x-retry-test-id``: the fuzz
injects no faults.

The strategies are built once, at import: Hypothesis checks every strategy
object it meets, and building them inside each draw would cost more than
the requests themselves.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from hypothesis import strategies as st

from kombu_appengine import api
from tests.support.helpers import b64

T = TypeVar("T")

#: The project the fuzzed emulator holds tasks in.
PROJECT = "demo"
#: Queues the fuzzed emulator declares: plain pull queues, one whose tasks
#: may be leased once (``maxLeases``), and a push queue.
PULL_QUEUES = ("default", "other")
LIMITED_QUEUE, PUSH_QUEUE = "limited", "push-queue"
#: ``maxLeases`` of :data:`LIMITED_QUEUE`.
LIMITED_MAX_LEASES = 1
#: The fuzzed emulator's clock, which never moves, in seconds since the epoch.
START = 1_700_000_000
#: Length of the lease of the seeded task :data:`LEASED`, in seconds.
LEASE_SECONDS = 60
#: The seeded tasks: leased, available, tagged (in ``default``) and worn out
#: (in :data:`LIMITED_QUEUE`, leased as often as it may be).
LEASED, IDLE, TAGGED, WORN = "leased", "idle", "tagged", "worn"
#: The tag of :data:`TAGGED`.
TAG = "red"
#: When the lease of :data:`LEASED` ends, in microseconds: what an update must quote.
LEASED_UNTIL = (START + LEASE_SECONDS) * 1_000_000

#: A number of more digits than Python's ``int()`` converts from text by default (4300).
HUGE_DIGITS = "9" * 5000
#: A payload just over the API's limit, as base64.
OVERSIZED_PAYLOAD = b64(b"\0" * (api.MAX_PAYLOAD_BYTES + 1))


@dataclass(frozen=True)
class RawRequest:
    """One HTTP request as the wire carries it; ``head`` may hold ``{HOST}`` and ``{PORT}``."""

    head: bytes
    body: bytes

    def render(self, host: str) -> bytes:
        """The bytes to send to the server at ``host`` (``HOST:PORT``)."""
        port = host.rpartition(":")[2]
        return self.head.replace(b"{HOST}", host.encode()).replace(b"{PORT}", port.encode()) + self.body


def sometimes(
    common: st.SearchStrategy[T], rare: st.SearchStrategy[T], weight: int = 3
) -> st.SearchStrategy[T]:
    """``common`` ``weight`` times as often as ``rare``."""
    # (one_of flattens repeated branches into one, so it cannot weigh them.)
    return st.sampled_from([True] * weight + [False]).flatmap(lambda usual: common if usual else rare)


def pick(*values: T) -> st.SearchStrategy[T]:
    """One of ``values``."""
    return st.sampled_from(values)


# -- paths ----------------------------------------------------------------------

#: Path segments that are anything but well-behaved, sent as they are.
HOSTILE_SEGMENTS = (
    "",
    ".",
    "..",
    "%2e%2e",
    "%2F",
    "a%2Fb",
    "%00",
    "%",
    "%zz",
    "%ED%A0%80",
    "caf%C3%A9",
    "caf\u00e9",
    "\u202e\U0001f600",
    "a b",
    ";x=1",
    "a?b",
    "a#b",
    "x" * 600,
    "%41" * 200,
    "x" * 70_000,  # a request line over the stdlib's 64 KiB
    "s~",
    "e~",
    "~",
    "lease",
    "tasks",
)
#: Usual segments, the ones that name seeded things several times over.
PROJECTS = (PROJECT, PROJECT, f"s~{PROJECT}", f"e~{PROJECT}", "other-app")
QUEUE_NAMES = ("default", "default", "default", "other", LIMITED_QUEUE, PUSH_QUEUE, "unknown", "q" * 101)
TASK_NAMES = (LEASED, LEASED, IDLE, IDLE, TAGGED, WORN, "missing", "a" * 500, "a" * 501)

#: Any text, percent-encoded as a client would, or sent raw.
quoted_text = st.one_of(
    st.text(max_size=12).map(lambda value: urllib.parse.quote(value, safe="")), st.text(max_size=12)
)
hostile_segments = st.one_of(st.sampled_from(HOSTILE_SEGMENTS), quoted_text)
project_segments = sometimes(st.sampled_from(PROJECTS), hostile_segments, 8)
queue_segments = sometimes(st.sampled_from(QUEUE_NAMES), hostile_segments, 8)
task_segments = sometimes(st.sampled_from(TASK_NAMES), hostile_segments, 8)
path_suffixes = sometimes(st.just(""), pick("/", "//", "/extra", "/..", "/."), 12)


def fill(template: str, draw: st.DrawFn) -> str:
    """A method's path below the root, its parameters drawn, and sometimes more after it."""
    path = (
        template.replace("{project}", draw(project_segments))
        .replace("{taskqueue}", draw(queue_segments))
        .replace("{task}", draw(task_segments))
    )
    return api.SERVICE_PATH + path + draw(path_suffixes)


#: Paths that are not the API's methods, or only nearly.
OTHER_PATHS = (
    api.DISCOVERY_PATH,
    *api.BATCH_PATHS,
    "/",
    "",
    "*",
    "/retry_test/no-such-test",
    "/retry_test/",
    "/retry_test/%00",
    api.SERVICE_PATH,
    api.SERVICE_PATH.rstrip("/"),
    api.SERVICE_PATH + PROJECT,
    api.SERVICE_PATH + f"{PROJECT}/taskqueues",
    api.SERVICE_PATH + f"{PROJECT}/taskqueues/default/tasks/{IDLE}/lease",
    "/TASKQUEUE/v1beta2/projects/demo/taskqueues/default",
    "http://{HOST}" + api.SERVICE_PATH + f"{PROJECT}/taskqueues/default/tasks",
    "http://evil.example" + api.SERVICE_PATH + f"{PROJECT}/taskqueues/default",
    "//" + api.SERVICE_PATH + f"{PROJECT}/taskqueues/default",
    api.SERVICE_PATH + f"{PROJECT}/taskqueues/default/../default/tasks",
)
other_paths = st.one_of(st.sampled_from(OTHER_PATHS), quoted_text.map("/".__add__))


# -- query strings ----------------------------------------------------------------

INTEGERS = ("1", "10", "0", "60", "1000", "1001", "604800", "604801", "-1", "-0", "007")
ODD_INTEGERS = ("+1", " 1", "1.5", "0x10", "\uff11", "\u0661", "1_0", "", "1e3", "9" * 30, HUGE_DIGITS)
BOOLEANS = ("true", "false", "TRUE", "1", "0", "yes", "")
TAGS = (TAG, "blue", "", "t" * 501, "\u00e9", "\U0001f600")
odd_values = st.one_of(st.sampled_from(ODD_INTEGERS), st.text(max_size=8))
integers = sometimes(st.sampled_from(INTEGERS), odd_values)
booleans = sometimes(st.sampled_from(BOOLEANS), odd_values)
#: Query parameters the API reads, standard ones, strangers; and the values of each.
QUERY_PARAMETERS = {
    "numTasks": integers,
    "leaseSecs": integers,
    "newLeaseSeconds": integers,
    "groupByTag": booleans,
    "getStats": booleans,
    "prettyPrint": booleans,
    "tag": sometimes(st.sampled_from(TAGS), odd_values),
    "alt": sometimes(pick("json"), odd_values),
    "fields": odd_values,
    "oauth_token": odd_values,
    "x": odd_values,
}
#: Pieces of a query string that are not ``name=value`` at all.
QUERY_JUNK = ("", "=", "&", "%", "%zz", "%%", "a=b=c", "numTasks", "=1", ";", "a%00=b", "+", "%ED%A0%80=1")
encodings = pick(urllib.parse.quote, str)


@st.composite
def query_parameters(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(QUERY_PARAMETERS)))
    return urllib.parse.quote(name) + "=" + draw(encodings)(draw(QUERY_PARAMETERS[name]))


#: ``?`` and parameters: random, duplicated, malformed.
query_strings = st.lists(sometimes(query_parameters(), st.sampled_from(QUERY_JUNK)), max_size=6).map(
    lambda pieces: "?" + "&".join(pieces)
)
#: Queries that make each method's call valid (with a seeded task).
VALID_QUERIES = {
    api.TASKQUEUES_GET.id: ("", "?getStats=true", "?getStats=false&alt=json"),
    api.TASKS_LEASE.id: (
        "?numTasks=10&leaseSecs=60",
        "?numTasks=1&leaseSecs=0&groupByTag=true",
        f"?numTasks=5&leaseSecs=30&groupByTag=true&tag={TAG}",
        f"?numTasks=1000&leaseSecs=604800&groupByTag=1&tag={TAG}",
    ),
    api.TASKS_UPDATE.id: ("?newLeaseSeconds=30", "?newLeaseSeconds=0"),
    api.TASKS_PATCH.id: ("?newLeaseSeconds=30", "?newLeaseSeconds=0"),
}
valid_queries = {
    method.id: sometimes(st.sampled_from(VALID_QUERIES.get(method.id, ("",))), query_strings, 4)
    for method in api.METHODS
}

# -- bodies -----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
#: Lone surrogates: JSON may escape them (``"\\ud800"``); UTF-8 cannot encode them.
SURROGATES = ("\ud800", "\udfff", "a\udc80b")
#: Any text, lone surrogates included (JSON can carry them).
some_text = st.text(st.characters(exclude_categories=()), max_size=8)
TASK_FIELDS = {
    "payloadBase64": sometimes(
        st.binary(max_size=48).map(b64),
        pick(
            "", "!!!", "eA", "eA=", "eA===", "-_-_", "e A = =", "\u00e9", 5, None, ["eA=="], OVERSIZED_PAYLOAD
        ),
    ),
    "id": sometimes(
        pick(*TASK_NAMES, "new-task", "new_task-2"),
        st.one_of(pick("", "a/b", "a.b", 5, None, *SURROGATES), some_text),
    ),
    "tag": sometimes(
        pick(TAG, "blue", "", "t" * 500),
        st.one_of(pick("t" * 501, "\u20ac" * 167, 5, None, ["x"], *SURROGATES), some_text),
    ),
    "queueName": pick(
        "default",
        f"projects/{PROJECT}/taskqueues/default",
        f"projects/s~{PROJECT}/taskqueues/default",
        "projects/other-app/taskqueues/default",
        "other",
        LIMITED_QUEUE,
        "",
        "projects//taskqueues/",
        5,
        None,
        *SURROGATES,
    ),
    "leaseTimestamp": pick(
        str(LEASED_UNTIL), LEASED_UNTIL, "0", 0, "abc", 1.5, -1, True, None, HUGE_DIGITS, 10**30, [], {}
    ),
    "kind": pick(api.TASK_KIND, "x", 1),
    "retry_count": pick(0, 1, -1, "1"),
}
#: Tasks that the API takes, for one method or another: what the drawn fields change.
BASE_TASKS = (
    {},
    {"payloadBase64": b64(b"new")},
    {"id": "new-task", "payloadBase64": b64(b"new"), "tag": TAG, "queueName": "default"},
    {"queueName": "default"},
    {"queueName": f"projects/s~{PROJECT}/taskqueues/default", "leaseTimestamp": str(LEASED_UNTIL)},
)
field_names = st.lists(st.sampled_from(sorted(TASK_FIELDS)), max_size=3)
strangers = sometimes(st.just({}), st.dictionaries(st.text(max_size=6), json_values, max_size=3), 4)


@st.composite
def task_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A Task as JSON: one the API takes, a few of its fields drawn (valid or not), strangers sometimes."""
    document = dict(draw(st.sampled_from(BASE_TASKS)))
    for name in draw(field_names):
        document[name] = draw(TASK_FIELDS[name])
    return {**document, **draw(strangers)}


MUTATIONS = ("none",) * 12 + ("truncate", "insert", "delete", "utf-16", "bom")
positions = st.integers(0, 1000)
inserted_bytes = st.binary(min_size=1, max_size=8)
deleted_lengths = st.integers(1, 8)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """A Task as JSON text: well-formed, or mutated into something that is not."""
    text = json.dumps(draw(task_documents())).encode()
    mutation = draw(st.sampled_from(MUTATIONS))
    at = draw(positions) % (len(text) + 1)
    if mutation == "truncate":
        return text[:at]
    if mutation == "insert":
        return text[:at] + draw(inserted_bytes) + text[at:]
    if mutation == "delete":
        return text[:at] + text[at + draw(deleted_lengths) :]
    if mutation == "utf-16":
        return text.decode().encode("utf-16")
    if mutation == "bom":
        return b"\xef\xbb\xbf" + text
    return text


def _nested(depth: int, opener: bytes, closer: bytes) -> bytes:
    return opener * depth + b"1" + closer * depth


#: JSON nested deep, alone or inside a Task.
NESTED = tuple(
    wrapped
    for depth in (10, 200, 255, 256, 257, 1000, 100_000)
    for opener, closer in ((b"[", b"]"), (b'{"a":', b"}"))
    for wrapped in (
        _nested(depth, opener, closer),
        b'{"payloadBase64": "", "x": ' + _nested(depth, opener, closer) + b"}",
    )
)
#: Bodies that are JSON but not a Task object, or hold what JSON allows and Python chokes on.
ODD_JSON = (
    b"[]",
    b'"text"',
    b"1",
    b"null",
    b"true",
    b"{}",
    b"{} {}",
    b'{"payloadBase64": "", "leaseTimestamp": ' + HUGE_DIGITS.encode() + b"}",
    b'{"payloadBase64": "", "leaseTimestamp": 1e999, "id": "x"}',
    b'{"payloadBase64": "", "leaseTimestamp": NaN}',
    b'{"payloadBase64": "", "tag": "\\ud800"}',
    b'{"payloadBase64": "", "tag": "\xed\xa0\x80"}',
    b'{"payloadBase64": "", "id": "\\u0000"}',
    b'{"payloadBase64": "", "payloadBase64": "eA=="}',
    b"numTasks=1&leaseSecs=10",
    b"numTasks=" + HUGE_DIGITS.encode(),
)
#: A request body: a Task, nothing, or anything else.
bodies = sometimes(
    json_bodies(),
    st.one_of(
        st.just(b""),
        st.sampled_from(ODD_JSON),
        st.sampled_from(NESTED),
        st.binary(max_size=200),
        st.text(max_size=50).map(lambda text: text.encode("utf-8", "surrogatepass")),
    ),
    2,
)


# -- calls: request line and body ----------------------------------------------------

#: HTTP methods: the API's, others, and tokens that are not methods.
METHODS = ("GET", "POST", "DELETE", "PATCH", "PUT", "HEAD", "OPTIONS", "TRACE", "CONNECT", "get", "Post")
GARBAGE_METHODS = ("G ET", "GET\x00", "\u00c9T", "1", "-", "A" * 300, "")
methods = sometimes(
    st.sampled_from(METHODS), st.one_of(st.sampled_from(GARBAGE_METHODS), st.text(max_size=6)), 6
)
#: Methods whose body is a Task.
TASK_BODY_METHODS = frozenset({api.TASKS_INSERT.id, api.TASKS_UPDATE.id, api.TASKS_PATCH.id})
task_bodies = sometimes(json_bodies(), bodies, 6)
other_bodies = sometimes(st.just(b""), bodies, 6)


class Call(NamedTuple):
    """What a request asks: its method, target (path and query) and body."""

    method: str
    target: str
    body: bytes


@st.composite
def api_calls(draw: st.DrawFn) -> Call:
    """A call of one of the API's methods: mostly its own verb, query and kind of body,
    every piece of them sometimes replaced or broken."""
    method = draw(st.sampled_from(api.METHODS))
    verb = draw(sometimes(st.just(method.http_method), methods, 10))
    target = fill(method.path, draw) + draw(valid_queries[method.id])
    return Call(verb, target, draw(task_bodies if method.id in TASK_BODY_METHODS else other_bodies))


#: A call of anything else: the discovery document, the batch endpoint, retry tests, random paths.
other_calls = st.builds(Call, methods, st.tuples(other_paths, query_strings).map("".join), bodies)
#: Any call, mostly of the API's methods.
calls = sometimes(api_calls(), other_calls, 6)


# -- headers ----------------------------------------------------------------------

#: ``Host`` headers: the server's own names mostly, foreign and malformed ones too.
HOSTS = (
    ["localhost:{PORT}"],
    ["127.0.0.1:{PORT}"],
    ["[::1]:{PORT}"],
    ["LocalHost:{PORT}"],
    [],
    ["evil.example:{PORT}"],
    ["evil.example"],
    ["localhost"],
    ["{HOST}", "{HOST}"],
    ["localhost:" + HUGE_DIGITS],
    ["localhost:0{PORT}"],
    ["localhost:{PORT}0"],
    ["localhost:{PORT} "],
    ["localhost:\uff11"],
    [""],
    ["[::1]"],
    ["[::1:{PORT}"],
    ["127.0.0.1:-{PORT}"],
)
ORIGINS = (
    "http://{HOST}",
    "http://localhost:{PORT}",
    "https://{HOST}",
    "http://evil.example",
    "null",
    "",
    "http://{HOST}/path",
    "http://localhost:" + HUGE_DIGITS,
    "http://",
    "{HOST}",
)
CONTENT_TYPES = (
    "application/json",
    "application/json; charset=UTF-8",
    "APPLICATION/JSON",
    " application/json ;",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/mixed; boundary=b",
    "",
    "application/jsonx",
    "application/json\x00",
)
#: Other headers, each with its values; none of them ``x-retry-test-id``.
EXTRA_HEADERS = (
    ("X-HTTP-Method-Override", ("GET", "DELETE", "PATCH", "POST", "get", "FOO", "")),
    ("Authorization", ("Bearer token", "Bearer", "Basic eDp5", "Bearer  ", "bearer x y")),
    ("Expect", ("100-continue", "100-Continue", "200-ok")),
    ("Connection", ("close", "keep-alive", "upgrade", "")),
    ("Accept-Encoding", ("gzip", "identity")),
    ("x-goog-api-client", ("gl-python/3",)),
)
#: Lines that are not ``Name: value``, or are much too long.
BAD_HEADER_LINES = (" folded", "no colon", ": no name", "\x00: nul", "X-Long: " + "v" * 70_000)
hosts = sometimes(st.just(["{HOST}"]), st.sampled_from(HOSTS), 10)
origins = sometimes(st.just([]), pick(*ORIGINS).map(lambda origin: [origin]), 10)
json_content_types = sometimes(pick(["application/json"]), pick(*CONTENT_TYPES).map(lambda value: [value]), 8)
extra_headers = sometimes(
    st.just([]),
    st.lists(
        st.sampled_from(EXTRA_HEADERS).flatmap(
            lambda header: pick(*header[1]).map(lambda value: f"{header[0]}: {value}")
        ),
        min_size=1,
        max_size=2,
    ),
)
header_names = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1, max_size=8
)
random_headers = sometimes(
    st.just([]), st.tuples(header_names, st.text(max_size=10)).map(lambda pair: [f"{pair[0]}: {pair[1]}"]), 9
)
bad_header_lines = sometimes(st.just([]), pick(*BAD_HEADER_LINES).map(lambda line: [line]), 19)


@st.composite
def header_lines(
    draw: st.DrawFn, content_types: st.SearchStrategy[list[str]] = json_content_types
) -> list[str]:
    """Header lines, ``Name: value`` (a few not even that); ``content_types`` gives the
    ``Content-Type`` values (none, one, or more)."""
    lines = [f"Host: {host}" for host in draw(hosts)]
    lines += [f"Origin: {origin}" for origin in draw(origins)]
    lines += [f"Content-Type: {value}" for value in draw(content_types)]
    return lines + draw(extra_headers) + draw(random_headers) + draw(bad_header_lines)


# -- framing ----------------------------------------------------------------------

chunk_sizes = st.integers(1, 64)
chunk_extensions = sometimes(st.just(b""), pick(b";x=y", b" ; ext"), 4)
trailers = sometimes(st.just(b""), st.just(b"X-Trailer: 1\r\n"), 4)


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` in chunks of random sizes, with optional extensions and trailers."""
    out = b""
    rest = body
    while rest:
        size = len(rest) if len(rest) > 4096 else draw(chunk_sizes)
        out += b"%x" % min(size, len(rest)) + draw(chunk_extensions) + b"\r\n" + rest[:size] + b"\r\n"
        rest = rest[size:]
    return out + b"0\r\n" + draw(trailers) + b"\r\n"


#: Chunked bodies that break the rules.
BAD_CHUNKED = (
    b"zz\r\n{}\r\n0\r\n\r\n",
    b"-1\r\n{}\r\n0\r\n\r\n",
    b"0x2\r\n{}\r\n0\r\n\r\n",
    b"2\r\n{}}\r\n0\r\n\r\n",
    b"ffffffffffffffff\r\n{}",
    b"ffffffffffffffffff\r\n{}",
    b"2\r\n{}",
    b"2\r\n{}\r\n",
    b" 2\r\n{}\r\n0\r\n\r\n",
    b"2" + b";" * 5000 + b"\r\n{}\r\n0\r\n\r\n",
    b"0\r\n" + b"X: y\r\n" * 70 + b"\r\n",
)
#: ``Content-Length`` values that are not a length.
BAD_LENGTHS = (
    "abc",
    "-1",
    "+5",
    "0x10",
    " 5 ",
    "",
    "\uff11",
    "1e3",
    HUGE_DIGITS,
    "5, 6",
    "5,5",
    "0" * 5000 + "5",
)
#: ``Transfer-Encoding`` values other than ``chunked``.
OTHER_CODINGS = (
    "gzip",
    "chunked, gzip",
    "gzip, chunked",
    "chunked, chunked",
    "identity",
    "xchunked",
    "chunked;",
    "\x00",
)
FRAMINGS = ("length",) * 30 + (
    "none",
    "short",
    "long",
    "same twice",
    "two lengths",
    "bad length",
    "chunked",
    "chunked",
    "bad chunked",
    "chunked and length",
    "other coding",
)
length_errors = st.integers(1, 100)


@st.composite
def framed(draw: st.DrawFn, body: bytes) -> tuple[list[str], bytes]:
    """How ``body`` is delimited: the framing header lines, and the bytes sent after the head."""
    how = draw(st.sampled_from(FRAMINGS))
    length = f"Content-Length: {len(body)}"
    if how == "none":
        return [], body
    if how == "short":
        return [f"Content-Length: {max(0, len(body) - draw(length_errors))}"], body
    if how == "long":
        return [f"Content-Length: {len(body) + draw(length_errors)}"], body
    if how == "same twice":
        return [length, length], body
    if how == "two lengths":
        return [length, f"Content-Length: {len(body) + 1}"], body
    if how == "bad length":
        return [f"Content-Length: {draw(st.sampled_from(BAD_LENGTHS))}"], body
    if how == "chunked":
        return ["Transfer-Encoding: chunked"], draw(chunked(body))
    if how == "bad chunked":
        return ["Transfer-Encoding: chunked"], draw(st.sampled_from(BAD_CHUNKED))
    if how == "chunked and length":
        return ["Transfer-Encoding: chunked", length], draw(chunked(body))
    if how == "other coding":
        return [f"Transfer-Encoding: {draw(st.sampled_from(OTHER_CODINGS))}"], draw(chunked(body))
    return [length], body


# -- requests ---------------------------------------------------------------------

ODD_VERSIONS = (
    "HTTP/1.0",
    "",
    "HTTP/2.0",
    "HTTP/3",
    "HTTP/0.9",
    "HTTP/1.1.1",
    "http/1.1",
    "HTTP/1.1 x",
    "HTTP/9999999999.1",
    "HTTP/01.1",
)
versions = sometimes(st.just("HTTP/1.1"), st.sampled_from(ODD_VERSIONS), 16)
newlines = sometimes(st.just("\r\n"), st.just("\n"), 12)
pipelined = sometimes(st.just(b""), pick(b"\r\n", b"GET / HTTP/1.1\r\n\r\n", b"\x00\xff"), 12)


@st.composite
def http_requests(
    draw: st.DrawFn,
    calls: st.SearchStrategy[Call] = calls,
    content_types: st.SearchStrategy[list[str]] = json_content_types,
) -> RawRequest:
    """A whole HTTP request: request line, headers, framing and body, each possibly broken;
    and sometimes bytes after it, which the server reads as the next request."""
    call = draw(calls)
    framing, sent = draw(framed(call.body))
    lines = draw(st.permutations([*draw(header_lines(content_types)), *framing]))
    newline = draw(newlines)
    request_line = " ".join(word for word in (call.method, call.target, draw(versions)) if word)
    head = newline.join([request_line, *lines]) + newline + newline
    return RawRequest(head.encode("utf-8", "surrogatepass"), sent + draw(pipelined))


# -- batches ----------------------------------------------------------------------

#: Boundaries: legal ones (RFC 2046: 1 to 70 of its characters, not ending
#: in a space), and ones that are not.
BOUNDARIES = ("batch_fuzz", "b", "=_a'()+_,-./:=?", "x" * 70, "with space", "0")
BAD_BOUNDARIES = ("", "x" * 71, "ends in space ", "caf\u00e9", 'quo"te', "semi;colon")
#: Content-IDs: echoed as ``<response-ID>`` when printable ASCII; other ones refuse the batch.
CONTENT_IDS = ("<1>", "2", "<item-3@fuzz>", "<>", "", "<<x>>", "<a b>", "x" * 500)
BAD_CONTENT_IDS = ("<\u00e9>", "\u2603", "a\x00b", "\x7f")
PART_CONTENT_TYPES = (
    "application/http",
    "application/http; msgtype=request",
    "APPLICATION/HTTP",
    "text/plain",
    "",
)
TRANSFER_ENCODINGS = ("binary", "7bit", "8bit", "base64", "quoted-printable", "BASE64")
BAD_TRANSFER_ENCODINGS = ("x-unknown", "gzip", "")
#: A part's call; sometimes a batch, which a batch may not hold.
inner_calls = sometimes(
    calls,
    st.builds(Call, st.just("POST"), pick(*api.BATCH_PATHS, "http://x/batch", "/batch?x=1"), bodies),
    12,
)
inner_versions = sometimes(st.just(" HTTP/1.1"), pick("", " HTTP/1.0", " HTTP/2", " http/1.1"))
inner_lengths = sometimes(st.just("right"), pick("none", "short", "long", "bad", "huge"), 3)
content_ids = sometimes(st.sampled_from(CONTENT_IDS), st.sampled_from(BAD_CONTENT_IDS), 15)
part_content_types = sometimes(st.just("application/http"), st.sampled_from(PART_CONTENT_TYPES), 4)
transfer_encodings = sometimes(
    st.just(None), st.one_of(st.sampled_from(TRANSFER_ENCODINGS), st.sampled_from(BAD_TRANSFER_ENCODINGS)), 6
)
part_newlines = sometimes(st.just(b"\r\n"), st.just(b"\n"), 6)


@dataclass(frozen=True)
class Part:
    """One part of a batch: its bytes, its Content-ID, and whether the server must take it."""

    raw: bytes
    content_id: str | None
    #: Whether the part's MIME headers are all right (the batch is refused whole otherwise).
    well_formed: bool


@st.composite
def inner_requests(draw: st.DrawFn) -> bytes:
    """The HTTP request inside a part: a request line with or without a version, headers, a body."""
    newline = draw(part_newlines)
    call = draw(inner_calls)
    body = call.body
    lines = [f"{call.method} {call.target}{draw(inner_versions)}".encode("utf-8", "surrogatepass")]
    lines += [b"Content-Type: " + value.encode("utf-8") for value in draw(json_content_types)]
    lines += [line.encode("utf-8") for line in draw(extra_headers) + draw(bad_header_lines)]
    length = draw(inner_lengths)
    if length != "none":
        value = {
            "right": len(body),
            "short": max(0, len(body) - 3),
            "long": len(body) + 3,
            "bad": "x1",
            "huge": HUGE_DIGITS,
        }[length]
        lines.append(b"Content-Length: %s" % str(value).encode())
    return newline.join(lines) + newline + newline + body


@st.composite
def batch_parts(draw: st.DrawFn) -> Part:
    """One part: MIME headers, a blank line, and one HTTP request (encoded, maybe)."""
    newline = draw(part_newlines)
    inner = draw(inner_requests())
    content_id = draw(st.one_of(st.none(), content_ids))
    content_type = draw(part_content_types)
    encoding = draw(transfer_encodings)
    headers = [b"Content-Type: " + content_type.encode()]
    well_formed = True
    if content_id is not None:
        headers.append(b"Content-ID: " + content_id.encode("utf-8"))
        well_formed = content_id.isascii() and content_id.isprintable()
    if encoding is not None:
        headers.append(b"Content-Transfer-Encoding: " + encoding.encode())
        well_formed = well_formed and encoding.lower() in TRANSFER_ENCODINGS
        if encoding.lower() == "base64":
            inner = base64.encodebytes(inner)
        elif encoding.lower() == "quoted-printable":
            inner = binascii.b2a_qp(inner)
    if draw(sometimes(st.just(False), st.just(True), 15)):
        # A batch inside the batch: as the part's own content type.
        headers.append(b"Content-Type: multipart/mixed; boundary=inner")
        well_formed = False
    headers = draw(st.permutations(headers))
    return Part(newline.join(headers) + newline + newline + inner, content_id, well_formed)


@dataclass(frozen=True)
class Batch:
    """A batch request, and what the server must make of it when it is well-formed."""

    request: RawRequest
    #: The Content-ID of each part, in order, when the batch must be answered
    #: part by part; ``None`` when the server may refuse it whole.
    content_ids: tuple[str | None, ...] | None


#: How many times the drawn parts are repeated: mostly once, sometimes up to
#: the API's limit of parts or past it.
repeats = sometimes(
    st.just(1), pick(0, 2, api.MAX_BATCH_PARTS // 2, api.MAX_BATCH_PARTS, api.MAX_BATCH_PARTS + 1), 15
)
delimiter_endings = sometimes(st.just(b""), pick(b" ", b"\t", b"  \t", b"x"), 8)
closings = sometimes(st.just("closed"), pick("unclosed", "closed twice", "epilogue"), 8)
preambles = sometimes(st.just(b""), pick(b"preamble\r\n", b"\r\n", b"--not-the-boundary\r\n"), 8)
boundaries = sometimes(st.sampled_from(BOUNDARIES), st.sampled_from(BAD_BOUNDARIES), 8)
boundary_parameters = sometimes(
    pick("multipart/mixed; boundary={}", 'multipart/mixed; boundary="{}"'),
    pick(
        "multipart/mixed; BOUNDARY = {}",
        "Multipart/Mixed;boundary={};x=y",
        "multipart/mixed",
        "multipart/related; boundary={}",
        "text/plain; boundary={}",
    ),
    6,
)
batch_methods = sometimes(st.just("POST"), methods, 12)
#: True 12 times in 13.
usually = st.sampled_from([True] * 12 + [False])
batch_targets = sometimes(
    st.sampled_from(api.BATCH_PATHS), pick("/batch?alt=json", "/batch/", "/batch/taskqueue"), 8
)


@st.composite
def batch_requests(draw: st.DrawFn) -> Batch:
    """A batch request: a ``multipart/mixed`` body of drawn parts, well-formed or not."""
    boundary = draw(boundaries)
    delimiter_boundary = boundary if draw(usually) else draw(pick("other", boundary + "x", boundary.upper()))
    parts = draw(st.lists(batch_parts(), min_size=1, max_size=4)) * draw(repeats)
    newline = draw(part_newlines)
    delimiter = b"--" + delimiter_boundary.encode("utf-8") + draw(delimiter_endings)
    body = draw(preambles)
    for part in parts:
        body += delimiter + newline + part.raw + newline
    closing = draw(closings)
    if closing != "unclosed":
        body += delimiter + b"--" + newline
    if closing == "closed twice":
        body += delimiter + b"--" + newline
    if closing == "epilogue":
        body += b"epilogue" + newline
    content_type = draw(boundary_parameters).format(boundary)
    content_types = (
        [content_type] if draw(usually) else draw(pick([], [content_type] * 2, ["application/json"]))
    )
    call = Call(draw(batch_methods), draw(batch_targets), body)
    request = draw(http_requests(st.just(call), st.just(content_types)))
    marker = b"--" + boundary.encode("utf-8")
    well_formed = (
        boundary in BOUNDARIES
        and delimiter.rstrip(b" \t") == marker
        and closing != "unclosed"
        and 1 <= len(parts) <= api.MAX_BATCH_PARTS
        and all(part.well_formed and marker not in part.raw for part in parts)
    )
    return Batch(request, tuple(part.content_id for part in parts) if well_formed else None)
