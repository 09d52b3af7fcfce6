"""The ceiling: the same HTTP stack (uvicorn, httptools, uvloop) answering a
constant body, reading the request body but doing no model work. The distance
between this and mlscale is mlscale's own overhead.

``GET /count`` answers how many requests it has answered, so a benchmark can
count any load generator's requests the same way, at the server."""

BODY = b'{"predictions": [5.999086856842041]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
_answered = [0]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    message = await receive()
    while message.get("more_body"):
        message = await receive()
    if scope["path"] == "/count":
        body = b"%d" % _answered[0]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    _answered[0] += 1
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
