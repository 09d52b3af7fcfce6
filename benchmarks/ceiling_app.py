"""The ceiling: the same HTTP stack (uvicorn, httptools, uvloop) answering a
constant body, reading the request body but doing no model work. The distance
between this and mlscale is mlscale's own overhead."""

BODY = b'{"predictions": [5.999086856842041]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    message = await receive()
    while message.get("more_body"):
        message = await receive()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
