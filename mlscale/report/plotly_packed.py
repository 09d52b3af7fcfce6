"""plotly.js inlined once per page, packed, and the charts drawn from JSON.

plotly.js is 4.8 MB of minified text: as it is, it is most of a report's weight
(a day of simulation drawn at a point per pixel is ~0.2 MB more). Gzipped it is
1.5 MB, but a page can only carry text, and base64 would add a third. So the
gzip stream is written 7 bits per character: a character's code, modulo 128,
is the next 7 bits. The 125 values that are safe in a <script> element's text
are written as themselves (one byte of UTF-8); the three that are not (NUL, which
the HTML parser replaces; CR, which it turns into LF; and "<", which could close
the element) as U+0100 plus the value (two bytes). That is 8/7 plus 3/128 of
the gzip stream: 1.7 MB. The browser unpacks it with DecompressionStream (Chrome
80, Firefox 113, Safari 16.4), then runs it as an inline script would run, and
draws each chart from the JSON the page carries, so the page stays one file
that fetches nothing.
"""

from __future__ import annotations

import functools
import gzip
import html

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

_UNSAFE = (0, 13, ord("<"))  # the 7-bit values written as U+0100 + value

# Unpacks the library, then draws every chart whose figure the page carries. A
# Text node holds at most 64 K characters in some browsers: textContent joins them.
_LOADER = """
(async () => {
  const charts = document.querySelectorAll("script[data-plotly-figure]");
  try {
    if (!window.Plotly) {
      const text = document.getElementById("plotly-packed").textContent;
      const bytes = new Uint8Array(Math.floor(text.length * 7 / 8));
      let pending = 0, bits = 0, j = 0;
      for (let i = 0; i < text.length; i++) {
        pending = (pending << 7) | (text.charCodeAt(i) & 127);
        bits += 7;
        if (bits >= 8) {
          bits -= 8;
          bytes[j++] = pending >> bits;
          pending &= (1 << bits) - 1;
        }
      }
      const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
      const code = await new Response(stream).text();
      window.PlotlyConfig = {MathJaxConfig: "local"};
      const script = document.createElement("script");
      script.textContent = code;
      document.head.appendChild(script);
    }
    for (const data of charts) {
      const figure = JSON.parse(data.textContent);
      Plotly.newPlot(data.dataset.plotlyFigure, figure.data, figure.layout, {displaylogo: false, responsive: true});
    }
  } catch (error) {
    for (const data of charts) {
      document.getElementById(data.dataset.plotlyFigure).textContent =
        "This browser cannot unpack the charts (it needs DecompressionStream: Chrome 80, Firefox 113, " +
        "Safari 16.4 or later): " + error;
    }
  }
})();
"""


def pack(data: bytes) -> str:
    """``data`` as text, 7 bits per character (see the module's docstring)."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    bits = np.concatenate([bits, np.zeros(-len(bits) % 7, dtype=np.uint8)])
    values = bits.reshape(-1, 7) @ (1 << np.arange(6, -1, -1)).astype(np.uint8)
    values = values.astype(np.uint8)
    unsafe = np.isin(values, _UNSAFE)
    # UTF-8 of U+0100 + v (v < 64): 0xC4, 0x80 + v.
    pairs = np.empty((len(values), 2), dtype=np.uint8)
    pairs[:, 0] = np.where(unsafe, 0xC4, values)
    pairs[:, 1] = 0x80 + (values & 0x3F)
    keep = np.ones(pairs.shape, dtype=bool)
    keep[:, 1] = unsafe
    return pairs[keep].tobytes().decode("utf-8")


def unpack(text: str) -> bytes:
    """The inverse of ``pack``, as the page's loader does it (for the tests)."""
    values = np.frombuffer(text.encode("utf-16-le"), dtype=np.uint16) & 127
    bits = ((values[:, None] >> np.arange(6, -1, -1)) & 1).astype(np.uint8).ravel()
    usable = len(bits) - len(bits) % 8
    return np.packbits(bits[:usable]).tobytes()


@functools.lru_cache(maxsize=1)
def packed_plotlyjs() -> str:
    """plotly.js, gzipped and packed: once per process (it takes ~0.2 s)."""
    return pack(gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0))


def chart(figure: go.Figure, element_id: str) -> str:
    """A chart's place and its figure as JSON (plotly escapes "<", ">" and "/" in it)."""
    height = figure.layout.height or 500
    return (
        f'<div id="{html.escape(element_id)}" style="height:{int(height)}px; width:100%;"></div>\n'
        f'<script type="application/json" data-plotly-figure="{html.escape(element_id)}">'
        f"{figure.to_json()}</script>"
    )


def library() -> str:
    """plotly.js packed, and the script that unpacks it and draws the charts: once a
    page, after its charts."""
    return (
        f'<script type="text/plain" id="plotly-packed">{packed_plotlyjs()}</script>\n'
        f"<script>{_LOADER}</script>"
    )
