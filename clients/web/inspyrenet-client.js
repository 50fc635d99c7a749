/*
 * InSPyReNet engines: the browser client of `POST /v1/remove-background`.
 *
 * One file, no build step, no dependencies, ES5 (it runs where the storefront's ES5 bundle runs;
 * it needs a Promise: native, or the polyfill such a storefront already ships).
 *
 *   <script src="inspyrenet-client.js"></script>
 *   var client = new InspyrenetClient({primary: "https://cutouts-gpu.example", backup: "https://cutouts-cpu.example"});
 *   client.prewarm();                                        // on page load: POST /warmup, never throws
 *   client.cutout(file, {format: "webp"}).then(function (r) { img.src = URL.createObjectURL(r.blob); });
 *
 * The mobile path (the default where the browser can take it): on a phone the seconds are spent on
 * the wire, not in the model, which only ever sees the photo at its input size. So the client
 *   1. decodes the photo with its EXIF orientation applied,
 *   2. resizes it to the model's input size (learnt once per endpoint from GET /info) with the same
 *      arithmetic as the server's resize (Pillow's bilinear filter, to the bit), and uploads that as
 *      a JPEG of a few tens of kB,
 *   3. gets back the mask alone at that size (`output=mask`: a few kB of single-channel PNG),
 *   4. composes the full-size cutout itself: the photo's own pixels, the mask upsampled as the
 *      server's `upsample_mask` does (bilinear, align_corners) as alpha, written as PNG by its own
 *      encoder (the canvas would premultiply the colours away under low alpha), in bands that fit
 *      the browser's canvas size cap. `onPreview` gets a small cutout before the full one.
 * Callers that ask for it (`{compose: "server"}`), parameters it does not compose itself (`refine`,
 * `max_size`, or any it does not know), and browsers without what it needs take the server path:
 * the photo as it is, the cutout composed by the server, as before.
 *
 * Either way a request is sent as a raw body (XMLHttpRequest: upload progress works everywhere).
 * A 503 with Retry-After (the server's admission limit, or a worker being replaced) is waited
 * out and retried on the same endpoint, at most `maxRetries` times; a network error, a timeout
 * or any other 5xx fails over to the backup. A 4xx is the request's own fault (a corrupt image,
 * a bad parameter, a wrong key): it is not sent again anywhere.
 */
(function (root) {
  "use strict";

  var CUTOUT_PATH = "/v1/remove-background";
  var INFO_PATH = "/info";
  // iOS Safari refuses a canvas over 16,777,216 pixels (4096 x 4096); desktop browsers allow
  // 124-268 million. The lowest is the default: bands of the photo are composed one at a time.
  var DEFAULT_MAX_CANVAS_PIXELS = 16777216;
  // Chosen by measurement (docs/performance.md, "The mobile path"): the upload is the model's input
  // size exactly (the server's resize is then the identity) and lossless; the mask comes back as
  // single-channel PNG (smaller than lossless WebP on every photo measured).
  var DEFAULT_UPLOAD = {size: "model", type: "lossless", quality: null};
  var DEFAULT_MASK_FORMAT = "png";
  var PREVIEW_LONG_SIDE = 512;
  // Parameters the browser composes itself; any other sends the request down the server path.
  var COMPOSED_PARAMS = {output: true, format: true, quality: true, bg_color: true, threshold: true, reverse: true};
  var prewarmed = {};  // endpoint -> the promise of its /warmup: once per page load
  var described = {};  // endpoint -> the promise of its /info answer

  function now() {
    return root.performance && root.performance.now ? root.performance.now() : new Date().getTime();
  }

  function seconds(since) {
    return (now() - since) / 1000;
  }

  function trimSlash(url) {
    return String(url).replace(/\/+$/, "");
  }

  function query(params) {
    var parts = [];
    for (var name in params) {
      if (Object.prototype.hasOwnProperty.call(params, name) && params[name] !== undefined && params[name] !== null) {
        parts.push(encodeURIComponent(name) + "=" + encodeURIComponent(String(params[name])));
      }
    }
    return parts.length ? "?" + parts.join("&") : "";
  }

  function CutoutError(message, endpoint, status, detail) {
    var error = new Error(message);
    error.name = "CutoutError";
    error.endpoint = endpoint;
    error.status = status;  // 0: no HTTP answer (network error or timeout)
    error.detail = detail;
    return error;
  }

  /* The server's JSON error body {"detail": "..."}, read from a Blob answer. */
  function readDetail(xhr, done) {
    var body = xhr.response;
    if (!body || typeof root.FileReader === "undefined") {
      done(xhr.statusText || "");
      return;
    }
    var reader = new root.FileReader();
    reader.onload = function () {
      try {
        done(JSON.parse(reader.result).detail || reader.result);
      } catch (ignored) {
        done(String(reader.result).slice(0, 300));
      }
    };
    reader.onerror = function () {
      done(xhr.statusText || "");
    };
    reader.readAsText(body);
  }

  function retryAfterMs(xhr) {
    var value = xhr.getResponseHeader("Retry-After");
    if (value === null || value === "") {
      return null;
    }
    var wait = Number(value);
    if (!isNaN(wait)) {
      return Math.max(0, wait * 1000);
    }
    var date = Date.parse(value);  // Retry-After may also be an HTTP date
    return isNaN(date) ? null : Math.max(0, date - new Date().getTime());
  }

  function headerNumber(xhr, name) {
    var value = Number(xhr.getResponseHeader(name));
    return value > 0 ? value : null;
  }

  // -- the parameters the browser composes ------------------------------------------------------

  function hexColour(text) {
    var match = /^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/.exec(String(text).replace(/^\s+|\s+$/g, ""));
    if (!match) {
      return null;
    }
    var digits = match[1].length === 3 ? match[1].replace(/(.)/g, "$1$1") : match[1];
    return [parseInt(digits.slice(0, 2), 16), parseInt(digits.slice(2, 4), 16), parseInt(digits.slice(4, 6), 16)];
  }

  function flag(value) {
    var text = String(value).toLowerCase().replace(/^\s+|\s+$/g, "");
    if (value === true || /^(1|true|yes|on)$/.test(text)) {
      return true;
    }
    return value === false || /^(0|false|no|off|)$/.test(text) ? false : null;
  }

  /*
   * What the browser composes for these parameters ({output, format, quality, background, threshold,
   * reverse}), or a string that says why it does not: then the request takes the server path, where
   * the server checks the parameters (a bad value gets the server's own 400, as before).
   */
  function compositionPlan(params) {
    var plan = {output: "rgba", format: "png", quality: null, background: [255, 255, 255], threshold: null, reverse: false};
    for (var name in params) {
      if (Object.prototype.hasOwnProperty.call(params, name) && params[name] !== undefined && params[name] !== null) {
        if (!COMPOSED_PARAMS[name]) {
          return "parameter " + name + " is applied by the server";
        }
      }
    }
    if (params.output !== undefined && params.output !== null) {
      plan.output = String(params.output).toLowerCase();
    }
    if (params.format !== undefined && params.format !== null) {
      plan.format = String(params.format).toLowerCase() === "jpg" ? "jpeg" : String(params.format).toLowerCase();
    }
    if (params.quality !== undefined && params.quality !== null) {
      plan.quality = /^\d{1,3}$/.test(String(params.quality)) ? Number(params.quality) : NaN;
    }
    if (params.bg_color !== undefined && params.bg_color !== null) {
      plan.background = hexColour(params.bg_color);
    }
    if (params.threshold !== undefined && params.threshold !== null) {
      plan.threshold = /^\s*[0-9.]+\s*$/.test(String(params.threshold)) ? Number(params.threshold) : NaN;
    }
    if (params.reverse !== undefined && params.reverse !== null) {
      plan.reverse = flag(params.reverse);
    }
    var valid = /^(rgba|mask|rgb)$/.test(plan.output) && /^(png|webp|jpeg)$/.test(plan.format) &&
      plan.background !== null && plan.reverse !== null &&
      (plan.quality === null || (plan.quality >= 1 && plan.quality <= 100 && plan.format !== "png")) &&
      (plan.threshold === null || (plan.threshold >= 0 && plan.threshold <= 1)) &&
      !(plan.format === "jpeg" && plan.output === "rgba");
    return valid ? plan : "the server checks these parameters";
  }

  // -- what the mobile path needs of the browser ------------------------------------------------

  function newCanvas(width, height) {
    var canvas = root.document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    return canvas;
  }

  function context2d(canvas) {
    return canvas.getContext("2d", {willReadFrequently: true});
  }

  /* Why this browser cannot compose (null: it can). `features` lets a test switch one off. */
  function missingFeature(features) {
    var has = function (name, present) {
      return features[name] === false ? false : present;
    };
    if (!has("canvas", !!(root.document && root.document.createElement) &&
             !!newCanvas(1, 1).getContext && typeof root.HTMLCanvasElement !== "undefined" &&
             !!root.HTMLCanvasElement.prototype.toBlob)) {
      return "no canvas with toBlob";
    }
    if (!has("typedArrays", typeof root.Uint8ClampedArray === "function" && typeof root.Float32Array === "function")) {
      return "no typed arrays";
    }
    if (!has("objectURL", !!(root.URL && root.URL.createObjectURL))) {
      return "no object URLs";
    }
    return null;
  }

  // -- 1. decode the photo, its EXIF orientation applied ---------------------------------------

  /*
   * The photo as something a canvas can draw: an ImageBitmap where createImageBitmap takes
   * imageOrientation "from-image" (the EXIF orientation applied; colorSpaceConversion "none": the
   * file's own values, as the server's decoder reads them), else an <img>, which current engines
   * also draw oriented (CSS image-orientation: from-image is the default).
   */
  function decodePhoto(blob, features) {
    function viaImageElement() {
      return new root.Promise(function (resolve, reject) {
        var url = root.URL.createObjectURL(blob);
        var img = new root.Image();
        img.onload = function () {
          resolve({source: img, width: img.naturalWidth, height: img.naturalHeight, decoder: "img",
                   close: function () { root.URL.revokeObjectURL(url); }});
        };
        img.onerror = function () {
          root.URL.revokeObjectURL(url);
          reject(new Error("the browser cannot decode this image"));
        };
        img.src = url;
      });
    }
    if (features.createImageBitmap === false || typeof root.createImageBitmap !== "function") {
      return viaImageElement();
    }
    return root.createImageBitmap(blob, {imageOrientation: "from-image", colorSpaceConversion: "none"}).then(
      function (bitmap) {
        return {source: bitmap, width: bitmap.width, height: bitmap.height, decoder: "createImageBitmap",
                close: function () { if (bitmap.close) { bitmap.close(); } }};
      },
      viaImageElement  // an engine that does not know these options (or this format) may still have <img>
    );
  }

  /* Calls band(rgba, y0, rows) for horizontal bands of the photo that fit maxPixels; returns how many. */
  function forEachBand(photo, maxPixels, band) {
    var rowsPerBand = Math.max(1, Math.min(photo.height, Math.floor(maxPixels / photo.width)));
    var canvas = newCanvas(photo.width, rowsPerBand);
    var ctx = context2d(canvas);
    var count = 0;
    for (var y0 = 0; y0 < photo.height; y0 += rowsPerBand) {
      var rows = Math.min(rowsPerBand, photo.height - y0);
      ctx.clearRect(0, 0, photo.width, rows);
      ctx.drawImage(photo.source, 0, y0, photo.width, rows, 0, 0, photo.width, rows);
      band(ctx.getImageData(0, 0, photo.width, rows).data, y0, rows);
      count += 1;
    }
    canvas.width = canvas.height = 1;  // give the band's memory back now (iOS counts canvas memory)
    return count;
  }

  // -- the pixel kernels: Pillow's resample and DEFLATE, here and on worker threads ------------------
  // DEFLATE: the browser's CompressionStream is zlib at its default level, 3.9 s for a 12 MP cutout
  // on a 2-core desktop. This encoder does what zlib's Z_RLE strategy does, which suits filtered
  // image rows (0.6 s there): runs of one byte become matches at distance 1, the rest literals,
  // each block with its own Huffman codes. Each part of the image ends byte-aligned (an empty
  // stored block), so parts deflated apart join into one zlib stream, as serving/imaging/png.py
  // joins its strips; each part is its own IDAT chunk, so a worker computes its chunk's CRC too.

  /*
   * The pixel kernels as one self-contained function, so a worker runs the very same source:
   * imageKernels(self) there, imageKernels(window) here (and a minifier cannot split it apart).
   * Pillow's bilinear resample (section 2) and the PNG encoder's DEFLATE (section 5).
   */
  function imageKernels(root) {
    var PRECISION_BITS = 22;  // Pillow's fixed point for 8-bit images: 32 - 8 - 2

    /* Pillow's precompute_coeffs + normalize_coeffs_8bpc (libImaging/Resample.c) for the bilinear filter. */
    function resampleTaps(inSize, outSize) {
      var scale = inSize / outSize;
      var filterScale = Math.max(scale, 1);
      var support = filterScale;  // the bilinear filter's support is 1
      var size = Math.ceil(support) * 2 + 1;
      var bounds = new root.Int32Array(outSize * 2);
      var weights = new root.Int32Array(outSize * size);
      var raw = [];
      for (var out = 0; out < outSize; out++) {
        var center = (out + 0.5) * scale;
        var first = Math.max(0, truncate(center - support + 0.5));
        var count = Math.min(inSize, truncate(center + support + 0.5)) - first;
        var total = 0;
        for (var i = 0; i < count; i++) {
          var x = Math.abs((i + first - center + 0.5) / filterScale);
          raw[i] = x < 1 ? 1 - x : 0;
          total += raw[i];
        }
        for (i = 0; i < count; i++) {
          var w = total !== 0 ? raw[i] / total : raw[i];
          weights[out * size + i] = w < 0 ? truncate(-0.5 + w * (1 << PRECISION_BITS)) : truncate(0.5 + w * (1 << PRECISION_BITS));
        }
        bounds[out * 2] = first;
        bounds[out * 2 + 1] = count;
      }
      return {size: size, bounds: bounds, weights: weights};
    }

    function truncate(x) {
      return x < 0 ? Math.ceil(x) : Math.floor(x);
    }

    function clip8(sum) {
      var value = sum >> PRECISION_BITS;
      return value < 0 ? 0 : value > 255 ? 255 : value;
    }

    /* Pillow's horizontal pass: `rows` rows of src (`step` bytes a pixel, RGB first) into out (RGB, taps' width) at row `at`. */
    function resampleRows(src, step, srcWidth, rows, across, out, width, at) {
      var half = 1 << (PRECISION_BITS - 1);
      for (var y = 0; y < rows; y++) {
        var line = y * srcWidth * step;
        var target = (at + y) * width * 3;
        for (var x = 0; x < width; x++) {
          var first = across.bounds[x * 2];
          var count = across.bounds[x * 2 + 1];
          var k = x * across.size;
          var r = half, g = half, b = half;
          for (var i = 0; i < count; i++) {
            var p = line + (first + i) * step;
            var w = across.weights[k + i];
            r += src[p] * w;
            g += src[p + 1] * w;
            b += src[p + 2] * w;
          }
          out[target + x * 3] = clip8(r);
          out[target + x * 3 + 1] = clip8(g);
          out[target + x * 3 + 2] = clip8(b);
        }
      }
    }

    /*
     * Pillow's vertical pass, a band of source rows at a time: each band adds what its rows give to the
     * output rows whose window it meets (integer sums, so the order of the bands does not matter).
     */
    function ColumnSums(width, down, height) {
      this.width = width;
      this.down = down;
      this.height = height;
      this.sums = new root.Int32Array(width * height * 3);
      fillInt(this.sums, 1 << (PRECISION_BITS - 1));
      this.firstOpen = 0;  // output rows before it are complete: their windows ended above the bands seen
    }

    function fillInt(array, value) {
      for (var i = 0; i < array.length; i++) {
        array[i] = value;
      }
    }

    ColumnSums.prototype.add = function (src, step, y0, rows) {
      var width = this.width;
      var down = this.down;
      for (var yy = this.firstOpen; yy < this.height; yy++) {
        var first = down.bounds[yy * 2];
        var stop = first + down.bounds[yy * 2 + 1];
        if (first >= y0 + rows) {
          break;  // this output row, and every later one, starts below the band
        }
        if (stop <= y0 + rows && yy === this.firstOpen) {
          this.firstOpen = yy + 1;
        }
        var target = yy * width * 3;
        for (var y = Math.max(first, y0); y < Math.min(stop, y0 + rows); y++) {
          var w = down.weights[yy * down.size + (y - first)];
          var line = (y - y0) * width * step;
          for (var x = 0; x < width; x++) {
            var p = line + x * step;
            var q = target + x * 3;
            this.sums[q] += src[p] * w;
            this.sums[q + 1] += src[p + 1] * w;
            this.sums[q + 2] += src[p + 2] * w;
          }
        }
      }
    };

    ColumnSums.prototype.pixels = function () {
      var out = new root.Uint8Array(this.sums.length);
      for (var i = 0; i < out.length; i++) {
        out[i] = clip8(this.sums[i]);
      }
      return out;
    };

    function withAlpha(rgb) {
      var rgba = new root.Uint8ClampedArray(rgb.length / 3 * 4);
      for (var i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
        rgba[j] = rgb[i];
        rgba[j + 1] = rgb[i + 1];
        rgba[j + 2] = rgb[i + 2];
        rgba[j + 3] = 255;
      }
      return rgba;
    }

    var LENGTH_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163,
                       195, 227, 258];
    var LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
    var CODE_LENGTH_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
    var BLOCK_BYTES = 1 << 17;  // input bytes per block: Huffman codes that follow the photo's statistics
    var LENGTH_SYMBOL = null;  // match length (3..258) -> its symbol index into LENGTH_BASE

    function lengthSymbols() {
      if (LENGTH_SYMBOL === null) {
        LENGTH_SYMBOL = new root.Uint8Array(259);
        for (var code = 0; code < LENGTH_BASE.length; code++) {
          var top = code + 1 < LENGTH_BASE.length ? LENGTH_BASE[code + 1] : 259;
          for (var length = LENGTH_BASE[code]; length < top; length++) {
            LENGTH_SYMBOL[length] = code;
          }
        }
        LENGTH_SYMBOL[258] = 28;
      }
      return LENGTH_SYMBOL;
    }

    /* Huffman code lengths (at most maxBits) for the counts; at least two symbols get a code. */
    function codeLengths(counts, maxBits) {
      var symbols = [];
      for (var s = 0; s < counts.length; s++) {
        if (counts[s] > 0) {
          symbols.push(s);
        }
      }
      for (s = 0; symbols.length < 2; s++) {  // inflate refuses an incomplete code: give it two
        if (counts[s] === 0) {
          symbols.push(s);
        }
      }
      symbols.sort(function (a, b) { return (counts[a] || 1) - (counts[b] || 1) || a - b; });
      // Two-queue Huffman: leaves in ascending weight, merged nodes appended in ascending weight.
      var n = symbols.length;
      var weight = [];
      var parent = [];
      for (var i = 0; i < n; i++) {
        weight.push(counts[symbols[i]] || 1);
      }
      var leaf = 0;
      var node = n;
      function smallest() {
        if (leaf < n && (node >= weight.length || weight[leaf] <= weight[node])) {
          return leaf++;
        }
        return node++;
      }
      while (weight.length < 2 * n - 1) {
        var a = smallest();
        var b = smallest();
        parent[a] = parent[b] = weight.length;
        weight.push(weight[a] + weight[b]);
      }
      var depth = new Array(2 * n - 1);
      depth[2 * n - 2] = 0;
      for (i = 2 * n - 3; i >= 0; i--) {
        depth[i] = depth[parent[i]] + 1;
      }
      // Limit to maxBits (miniz's way): count codes per length, fold the long ones in, repair Kraft's sum.
      var perLength = [];
      for (i = 0; i <= Math.max(maxBits, 32); i++) {
        perLength[i] = 0;
      }
      for (i = 0; i < n; i++) {
        perLength[Math.min(depth[i], maxBits)] += 1;
      }
      var kraft = 0;
      for (i = 1; i <= maxBits; i++) {
        kraft += perLength[i] * Math.pow(2, maxBits - i);
      }
      while (kraft > Math.pow(2, maxBits)) {
        perLength[maxBits] -= 1;
        for (i = maxBits - 1; i > 0; i--) {
          if (perLength[i] > 0) {
            perLength[i] -= 1;
            perLength[i + 1] += 2;
            break;
          }
        }
        kraft -= 1;
      }
      var lengths = new root.Uint8Array(counts.length);
      var next = n - 1;  // the most frequent symbols get the shortest codes
      for (var bits = 1; bits <= maxBits; bits++) {
        for (var k = 0; k < perLength[bits]; k++) {
          lengths[symbols[next--]] = bits;
        }
      }
      return lengths;
    }

    /* Canonical codes for the lengths, bit-reversed: deflate sends Huffman codes high bit first. */
    function canonicalCodes(lengths) {
      var count = [];
      var next = [];
      for (var i = 0; i <= 16; i++) {
        count[i] = 0;
      }
      for (i = 0; i < lengths.length; i++) {
        count[lengths[i]] += 1;
      }
      count[0] = 0;
      var code = 0;
      for (var bits = 1; bits <= 16; bits++) {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
      }
      var codes = new root.Uint16Array(lengths.length);
      for (i = 0; i < lengths.length; i++) {
        var len = lengths[i];
        if (len > 0) {
          var value = next[len]++;
          var reversed = 0;
          for (var b = 0; b < len; b++) {
            reversed = (reversed << 1) | ((value >> b) & 1);
          }
          codes[i] = reversed;
        }
      }
      return codes;
    }

    function BitWriter(capacity) {
      this.bytes = new root.Uint8Array(capacity);
      this.pos = 0;
      this.bits = 0;
      this.count = 0;
    }

    BitWriter.prototype.put = function (value, width) {  // width <= 16; at most 15 bits wait in `bits`
      this.bits |= value << this.count;
      this.count += width;
      while (this.count >= 8) {
        this.bytes[this.pos++] = this.bits & 255;
        this.bits >>>= 8;
        this.count -= 8;
      }
    };

    BitWriter.prototype.align = function () {
      while (this.count > 0) {
        this.bytes[this.pos++] = this.bits & 255;
        this.bits >>>= 8;
        this.count = Math.max(0, this.count - 8);
      }
      this.bits = this.count = 0;
    };

    /* The lit/len and distance code lengths as deflate's header sends them (RFC 1951 3.2.7). */
    function writeTrees(out, litLengths, distLengths) {
      var nLit = 286;
      while (nLit > 257 && litLengths[nLit - 1] === 0) {
        nLit--;
      }
      var nDist = 30;
      while (nDist > 1 && distLengths[nDist - 1] === 0) {
        nDist--;
      }
      var all = [];
      for (var i = 0; i < nLit; i++) {
        all.push(litLengths[i]);
      }
      for (i = 0; i < nDist; i++) {
        all.push(distLengths[i]);
      }
      var symbols = [];  // [symbol, extra value] with 16 (repeat), 17 and 18 (zeros)
      for (i = 0; i < all.length;) {
        var value = all[i];
        var run = 1;
        while (i + run < all.length && all[i + run] === value) {
          run++;
        }
        if (value === 0 && run >= 3) {
          run = Math.min(run, 138);
          symbols.push(run >= 11 ? [18, run - 11] : [17, run - 3]);
        } else if (value !== 0 && run >= 4) {
          run = Math.min(run, 7);
          symbols.push([value, 0], [16, run - 4]);
        } else {
          run = 1;
          symbols.push([value, 0]);
        }
        i += run;
      }
      var counts = new root.Uint32Array(19);
      for (i = 0; i < symbols.length; i++) {
        counts[symbols[i][0]] += 1;
      }
      var lengths = codeLengths(counts, 7);
      var codes = canonicalCodes(lengths);
      var nCodes = 19;
      while (nCodes > 4 && lengths[CODE_LENGTH_ORDER[nCodes - 1]] === 0) {
        nCodes--;
      }
      out.put(nLit - 257, 5);
      out.put(nDist - 1, 5);
      out.put(nCodes - 4, 4);
      for (i = 0; i < nCodes; i++) {
        out.put(lengths[CODE_LENGTH_ORDER[i]], 3);
      }
      for (i = 0; i < symbols.length; i++) {
        var symbol = symbols[i][0];
        out.put(codes[symbol], lengths[symbol]);
        if (symbol >= 16) {
          out.put(symbols[i][1], symbol === 16 ? 2 : symbol === 17 ? 3 : 7);
        }
      }
    }

    /* bytes[start..end) as one dynamic-Huffman block; tokens: a scratch Uint16Array of (end - start). */
    function deflateBlock(out, bytes, start, end, last, tokens) {
      var symbolOf = lengthSymbols();
      var litCounts = new root.Uint32Array(286);
      var distCounts = new root.Uint32Array(30);
      var n = 0;
      var i = start;
      var previous = -1;
      while (i < end) {
        var byte = bytes[i];
        if (byte === previous && i + 2 < end && bytes[i + 1] === byte && bytes[i + 2] === byte) {
          var run = 3;
          var limit = Math.min(end - i, 258);
          while (run < limit && bytes[i + run] === byte) {
            run++;
          }
          tokens[n++] = 256 + run;  // a match at distance 1 (256 + its length: above every literal)
          litCounts[257 + symbolOf[run]] += 1;
          i += run;
        } else {
          tokens[n++] = byte;
          litCounts[byte] += 1;
          previous = byte;
          i++;
        }
      }
      litCounts[256] = 1;
      distCounts[0] = 1;  // the one distance used (1), and a second code: inflate wants a complete code
      distCounts[1] = 1;
      var litLengths = codeLengths(litCounts, 15);
      var distLengths = codeLengths(distCounts, 15);
      var litCodes = canonicalCodes(litLengths);
      var distCode = canonicalCodes(distLengths)[0];
      var distLength = distLengths[0];
      out.put(last ? 1 : 0, 1);
      out.put(2, 2);  // dynamic Huffman codes
      writeTrees(out, litLengths, distLengths);
      // The tokens, with the bit writer's state in locals: the loop every byte of a cutout goes through.
      var buffer = out.bytes;
      var pos = out.pos;
      var bits = out.bits;
      var count = out.count;
      for (var t = 0; t < n; t++) {
        var token = tokens[t];
        if (token < 256) {
          bits |= litCodes[token] << count;
          count += litLengths[token];
        } else {
          var length = token - 256;
          var code = symbolOf[length];
          bits |= litCodes[257 + code] << count;
          count += litLengths[257 + code];
          if (count >= 16) {
            buffer[pos++] = bits & 255;
            buffer[pos++] = (bits >>> 8) & 255;
            bits >>>= 16;
            count -= 16;
          }
          bits |= (length - LENGTH_BASE[code]) << count;
          count += LENGTH_EXTRA[code];
          if (count >= 16) {
            buffer[pos++] = bits & 255;
            buffer[pos++] = (bits >>> 8) & 255;
            bits >>>= 16;
            count -= 16;
          }
          bits |= distCode << count;
          count += distLength;
        }
        if (count >= 16) {
          buffer[pos++] = bits & 255;
          buffer[pos++] = (bits >>> 8) & 255;
          bits >>>= 16;
          count -= 16;
        }
      }
      out.pos = pos;
      out.bits = bits;
      out.count = count;
      out.put(litCodes[256], litLengths[256]);
    }

    /*
     * Raw deflate of bytes, in blocks; byte-aligned at the end: the final block when `last`, else
     * an empty stored block (a sync flush), so the next part can follow it in the same stream.
     */
    function deflatePart(bytes, last) {
      // Room for the worst case: a Huffman code averages under log2(286) + 1 = 9.2 bits a symbol,
      // plus each block's code tables.
      var out = new BitWriter(Math.ceil(bytes.length * 1.2) + 1024 * (Math.ceil(bytes.length / BLOCK_BYTES) + 2));
      var tokens = new root.Uint16Array(BLOCK_BYTES);
      for (var start = 0; start < bytes.length || start === 0; start += BLOCK_BYTES) {
        var end = Math.min(bytes.length, start + BLOCK_BYTES);
        deflateBlock(out, bytes, start, end, last && end === bytes.length, tokens);
        if (end === bytes.length) {
          break;
        }
      }
      if (!last) {
        out.put(0, 3);  // an empty stored block: BFINAL 0, BTYPE 00, aligned, LEN 0, NLEN 0xffff
        out.align();
        out.put(0, 16);
        out.put(0xffff, 16);
      }
      out.align();
      return out.bytes.subarray(0, out.pos);
    }

    function adler32(bytes, sums) {
      var a = sums & 0xffff;
      var b = sums >>> 16;
      for (var i = 0; i < bytes.length;) {
        var stop = Math.min(bytes.length, i + 5552);
        for (; i < stop; i++) {
          a += bytes[i];
          b += a;
        }
        a %= 65521;
        b %= 65521;
      }
      return ((b << 16) | a) >>> 0;
    }

    var CRC_TABLE = null;

    function crc32(bytes, crc) {
      if (CRC_TABLE === null) {
        CRC_TABLE = new root.Int32Array(256);
        for (var n = 0; n < 256; n++) {
          var c = n;
          for (var k = 0; k < 8; k++) {
            c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
          }
          CRC_TABLE[n] = c;
        }
      }
      crc = crc === undefined ? -1 : crc;
      for (var i = 0; i < bytes.length; i++) {
        crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
      }
      return crc;
    }

    function uint32(value) {
      return new root.Uint8Array([(value >>> 24) & 255, (value >>> 16) & 255, (value >>> 8) & 255, value & 255]);
    }

    /* The filtered rows as one IDAT chunk: length, type, their deflate part, CRC. */
    function idatChunk(filtered) {
      var part = deflatePart(filtered, false);
      var chunk = new root.Uint8Array(part.length + 12);
      chunk.set(uint32(part.length), 0);
      chunk.set([73, 68, 65, 84], 4);  // "IDAT"
      chunk.set(part, 8);
      chunk.set(uint32((crc32(chunk.subarray(4, 8 + part.length)) ^ -1) >>> 0), 8 + part.length);
      return chunk;
    }

    return {idatChunk: idatChunk, deflatePart: deflatePart, adler32: adler32, crc32: crc32, uint32: uint32,
            resampleTaps: resampleTaps, resampleRows: resampleRows, ColumnSums: ColumnSums, withAlpha: withAlpha};
  }

  var kernels = imageKernels(root);

  // -- 2. the server's resize, in the browser: Pillow's BILINEAR, to the bit ---------------------

  var PART_PIXELS = 1 << 19;  // a part for a worker: half a megapixel of rows, so every worker has work

  /*
   * The photo resized to width x height as Pillow's Image.resize(BILINEAR) resizes the same pixels,
   * fed a band of the photo at a time. Pillow 13.0 (pinned: constraints/serve.txt) runs the
   * vertical pass first when it shrinks the rows by more than twice as many as the horizontal pass
   * removes columns, else the horizontal pass first (measured on 2,478 random shapes; a test
   * compares the two on this Pillow); a side that keeps its size has no pass. RGBA out.
   */
  function resizeLikePillow(photo, width, height, maxPixels) {
    var across = kernels.resampleTaps(photo.width, width);
    var down = kernels.resampleTaps(photo.height, height);
    var horizontal = width !== photo.width;
    var vertical = height !== photo.height;
    if (vertical && (!horizontal || (height < photo.height && photo.height - height > 2 * (photo.width - width)))) {
      var columns = new kernels.ColumnSums(photo.width, down, height);
      forEachBand(photo, maxPixels, function (rgba, y0, rows) {
        columns.add(rgba, 4, y0, rows);
      });
      var tall = columns.pixels();  // photo.width x height, RGB
      if (!horizontal) {
        return root.Promise.resolve(kernels.withAlpha(tall));
      }
      var out = new root.Uint8Array(width * height * 3);
      kernels.resampleRows(tall, 3, photo.width, height, across, out, width, 0);
      return root.Promise.resolve(kernels.withAlpha(out));
    }
    // The horizontal pass first (or alone), here: on workers it took 2.6 times as long on a 2-core
    // desktop (the parts' copies and messages cost more than the pass: docs/performance.md).
    var wide = new root.Uint8Array(width * photo.height * 3);
    forEachBand(photo, maxPixels, function (rgba, y0, rows) {
      kernels.resampleRows(rgba, 4, photo.width, rows, across, wide, width, y0);
    });
    if (!vertical) {
      return root.Promise.resolve(kernels.withAlpha(wide));
    }
    var rest = new kernels.ColumnSums(width, down, height);
    rest.add(wide, 3, 0, photo.height);
    return root.Promise.resolve(kernels.withAlpha(rest.pixels()));
  }

  function canvasBlob(canvas, type, quality) {
    return new root.Promise(function (resolve, reject) {
      canvas.toBlob(function (blob) {
        if (blob) {
          resolve(blob);
        } else {
          reject(new Error("the canvas could not be encoded as " + type));
        }
      }, type, quality);
    });
  }

  function blobBytes(blob, start, end) {
    return new root.Promise(function (resolve, reject) {
      var reader = new root.FileReader();
      reader.onload = function () {
        resolve(new root.Uint8Array(reader.result));
      };
      reader.onerror = reject;
      reader.readAsArrayBuffer(blob.slice(start, end));
    });
  }

  /*
   * Whether a WebP file's image is lossless: the chunks after "RIFF" size "WEBP" hold a VP8L
   * bitstream, not a lossy "VP8 " one (an extended file starts with VP8X, maybe an alpha chunk; skip those).
   */
  function isLosslessWebp(blob) {
    if (blob.type !== "image/webp") {
      return root.Promise.resolve(false);
    }
    return blobBytes(blob, 0, 4096).then(function (bytes) {
      for (var at = 12; at + 8 <= bytes.length;) {
        var fourcc = String.fromCharCode(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
        if (fourcc === "VP8L" || fourcc === "VP8 ") {
          return fourcc === "VP8L";
        }
        var size = bytes[at + 4] | (bytes[at + 5] << 8) | (bytes[at + 6] << 16) | (bytes[at + 7] << 24);
        at += 8 + size + (size & 1);
      }
      return false;
    });
  }

  /*
   * The upload's file. "lossless" (the default: with the synthetic checkpoint even a JPEG at
   * quality 1.0 moves the mask by 2-5 levels, docs/performance.md) is WebP where the browser
   * encodes it losslessly (Chromium at quality 1), else PNG; the pixels are opaque, so the
   * canvas loses nothing. Any other type is the canvas encoder's at `quality`.
   */
  function encodeUpload(rgba, width, height, type, quality) {
    var canvas = newCanvas(width, height);
    var ctx = context2d(canvas);
    var image = ctx.createImageData(width, height);
    image.data.set(rgba);
    ctx.putImageData(image, 0, 0);
    var encoded;
    if (type === "lossless") {
      encoded = canvasBlob(canvas, "image/webp", 1).then(function (webp) {
        return isLosslessWebp(webp).then(function (lossless) {
          return lossless ? webp : canvasBlob(canvas, "image/png");
        });
      });
    } else {
      encoded = canvasBlob(canvas, type, quality);
    }
    return encoded.then(function (blob) {
      canvas.width = canvas.height = 1;
      return blob;
    });
  }

  /* The size the photo is uploaded at: the model's input ("model", the default) or a long side in pixels. */
  function uploadSize(photo, input, setting) {
    if (setting === "model") {
      return {width: input.width, height: input.height};
    }
    var scale = Math.min(1, setting / Math.max(photo.width, photo.height));
    return {width: Math.max(1, Math.round(photo.width * scale)), height: Math.max(1, Math.round(photo.height * scale))};
  }

  // -- 3. the mask the server answers ----------------------------------------------------------

  /* The mask image's gray levels: {levels: Uint8Array, width, height}. */
  function decodeMask(blob, features) {
    return decodePhoto(blob, features).then(function (image) {
      var levels = new root.Uint8Array(image.width * image.height);
      forEachBand(image, image.width * image.height, function (rgba) {
        for (var i = 0; i < levels.length; i++) {
          levels[i] = rgba[i * 4];
        }
      });
      image.close();
      return {levels: levels, width: image.width, height: image.height};
    });
  }

  // -- 4. compose: the mask upsampled as serving/imaging/contract.py upsample_mask does ---------

  var fround = Math.fround || function (x) { return x; };

  /* Source indices and weights of 1-D linear interpolation with align_corners=True, in float32. */
  function linearTaps(inSize, outSize) {
    var scale = outSize > 1 ? fround((inSize - 1) / (outSize - 1)) : 0;
    var low = new root.Int32Array(outSize);
    var high = new root.Int32Array(outSize);
    var frac = new root.Float32Array(outSize);
    for (var i = 0; i < outSize; i++) {
      var src = fround(i * scale);
      low[i] = Math.min(Math.floor(src), inSize - 1);
      high[i] = Math.min(low[i] + 1, inSize - 1);
      frac[i] = fround(src - low[i]);
    }
    return {low: low, high: high, frac: frac};
  }

  /*
   * The mask as alpha at width x height: rows(y0, count, out) writes the final alpha (0..255, after
   * threshold and reverse, as serving/imaging/cutout.py final_alpha) of rows y0.. into out.
   * The server truncates the float mask to 8 bits; a level L stands for L..L+1, so +0.5 is its
   * best estimate before the alpha is truncated again the way the server writes it.
   */
  function alphaRows(mask, width, height, plan) {
    var across = linearTaps(mask.width, width);
    var down = linearTaps(mask.height, height);
    var wide = new root.Float32Array(mask.height * width);
    for (var my = 0; my < mask.height; my++) {
      var line = my * mask.width;
      for (var x = 0; x < width; x++) {
        var f = across.frac[x];
        wide[my * width + x] = mask.levels[line + across.low[x]] * (1 - f) + mask.levels[line + across.high[x]] * f;
      }
    }
    var threshold = plan.threshold === null ? null : plan.threshold * 255;
    return function (y0, count, out) {
      for (var y = 0; y < count; y++) {
        var a = down.low[y0 + y] * width;
        var b = down.high[y0 + y] * width;
        var f2 = down.frac[y0 + y];
        for (var x2 = 0; x2 < width; x2++) {
          var level = wide[a + x2] * (1 - f2) + wide[b + x2] * f2 + 0.5;
          if (threshold !== null) {
            level = level > threshold ? 255 : 0;
          }
          if (plan.reverse) {
            level = 255 - level;
          }
          out[y * width + x2] = level <= 0 ? 0 : level >= 255 ? 255 : level | 0;
        }
      }
    };
  }

  function pngChunk(type, data) {
    var name = new root.Uint8Array([type.charCodeAt(0), type.charCodeAt(1), type.charCodeAt(2), type.charCodeAt(3)]);
    var crc = kernels.crc32(data, kernels.crc32(name)) ^ -1;
    return [kernels.uint32(data.length), name, data, kernels.uint32(crc >>> 0)];
  }

  /*
   * Workers that deflate the PNG's parts: as many as the machine has cores
   * (at most 4), made once per page from imageKernels' own source. Where the page cannot start a
   * worker (no Worker, or a content security policy without blob: workers), the work is done here.
   */
  var WORKER_MAIN = "self.onmessage = function (e) { var out = kernels.idatChunk(new Uint8Array(e.data.bytes));" +
    " self.postMessage({id: e.data.id, result: out.buffer}, [out.buffer]); };";

  function WorkerPool(size) {
    this.workers = [];
    this.waiting = {};
    this.next = 0;
    this.ids = 0;
    var pool = this;
    try {
      var source = "var kernels = (" + imageKernels.toString() + ")(self);\n" + WORKER_MAIN;
      var url = root.URL.createObjectURL(new root.Blob([source], {type: "text/javascript"}));
      for (var i = 0; i < size; i++) {
        var worker = new root.Worker(url);
        worker.onmessage = function (event) {
          var done = pool.waiting[event.data.id];
          delete pool.waiting[event.data.id];
          done.resolve(new root.Uint8Array(event.data.result));
        };
        worker.onerror = function (event) {
          pool.fail(event.message || "a worker failed");
        };
        this.workers.push(worker);
      }
    } catch (error) {
      this.close();
    }
  }

  WorkerPool.prototype.fail = function (reason) {
    var waiting = this.waiting;
    this.waiting = {};
    this.close();
    for (var id in waiting) {
      if (Object.prototype.hasOwnProperty.call(waiting, id)) {
        waiting[id].reject(new Error(reason));
      }
    }
  };

  WorkerPool.prototype.close = function () {
    for (var i = 0; i < this.workers.length; i++) {
      this.workers[i].terminate();
    }
    this.workers = [];
  };

  /* Send message (its `bytes` buffer moves to the worker) to the next worker; the promise of its result. */
  WorkerPool.prototype._post = function (message, buffer) {
    var pool = this;
    var id = ++this.ids;
    var worker = this.workers[this.next++ % this.workers.length];
    message.id = id;
    return new root.Promise(function (resolve, reject) {
      pool.waiting[id] = {resolve: resolve, reject: reject};
      worker.postMessage(message, [buffer]);
    });
  };

  function ownBuffer(array) {
    return array.byteOffset === 0 && array.byteLength === array.buffer.byteLength ? array.buffer : array.slice().buffer;
  }

  /* The filtered rows' IDAT chunk (the rows are not usable here after). */
  WorkerPool.prototype.chunk = function (filtered) {
    if (this.workers.length === 0) {
      return root.Promise.resolve(kernels.idatChunk(filtered));
    }
    var bytes = ownBuffer(filtered);
    return this._post({bytes: bytes}, bytes);
  };

  var sharedPool = null;  // the page's workers: made at its first cutout; none again once they failed

  function workerPool(features) {
    if (features.workers === false || typeof root.Worker !== "function") {
      return new WorkerPool(0);
    }
    if (sharedPool === null) {
      var cores = root.navigator && root.navigator.hardwareConcurrency ? root.navigator.hardwareConcurrency : 2;
      sharedPool = new WorkerPool(Math.min(4, cores));
    }
    return sharedPool;
  }

  /* Rows of pixels (`channels` bytes each) with filter Sub: each byte minus the one a pixel to its left. */
  function filterRows(pixels, width, channels, rows) {
    var stride = width * channels;
    var filtered = new root.Uint8Array(rows * (stride + 1));
    for (var y = 0; y < rows; y++) {
      var src = y * stride;
      var dst = y * (stride + 1);
      filtered[dst] = 1;
      for (var i = 0; i < channels; i++) {
        filtered[dst + 1 + i] = pixels[src + i];
      }
      for (i = channels; i < stride; i++) {
        filtered[dst + 1 + i] = pixels[src + i] - pixels[src + i - channels];
      }
    }
    return filtered;
  }

  /* Calls part(pixels, y0, rows) for parts of about PART_PIXELS of each band forEachBand draws. */
  function forEachPart(photo, maxPixels, part) {
    var partRows = Math.max(1, Math.floor(PART_PIXELS / photo.width));
    return forEachBand(photo, maxPixels, function (rgba, y0, rows) {
      for (var y = 0; y < rows; y += partRows) {
        var count = Math.min(partRows, rows - y);
        part(rgba.subarray(y * photo.width * 4, (y + count) * photo.width * 4), y0 + y, count);
      }
    });
  }

  /*
   * The photo's rows for an RGBA PNG, filtered before the mask is known: filter Sub works on each
   * channel apart, so the colour bytes are final now and only the alpha bytes wait for the mask.
   * Done while the request is in flight.
   */
  function prefilterPhoto(photo, maxPixels) {
    var parts = [];
    var bands = forEachPart(photo, maxPixels, function (rgba, y0, rows) {
      parts.push({y0: y0, rows: rows, filtered: filterRows(rgba, photo.width, 4, rows)});
    });
    return {parts: parts, bands: bands, width: photo.width, height: photo.height};
  }

  /* The alpha bytes of prefiltered RGBA rows: alpha's own Sub filter, in the fourth byte of each pixel. */
  function fillAlpha(filtered, alpha, width, rows) {
    var stride = width * 4 + 1;
    for (var y = 0; y < rows; y++) {
      var line = y * width;
      var at = y * stride + 4;
      filtered[at] = alpha[line];
      for (var x = 1; x < width; x++) {
        filtered[at + x * 4] = alpha[line + x] - alpha[line + x - 1];
      }
    }
  }

  /*
   * The full-size result as PNG, a part at a time within the canvas cap's bands: the photo's pixels
   * with the alpha (rgba, from the prefiltered rows when there are some), the gray alpha (mask) or
   * the photo over the background (rgb). Parts are deflated by the pool, in parallel.
   */
  function composePng(photo, mask, plan, maxPixels, pool, prefiltered) {
    var width = photo.width;
    var channels = plan.output === "rgba" ? 4 : plan.output === "rgb" ? 3 : 1;
    var alphaOf = alphaRows(mask, width, photo.height, plan);
    var bg = plan.background;
    var chunks = [];
    var sums = 1;  // Adler-32 of every filtered row, in order
    var alpha = new root.Uint8Array(Math.max(1, Math.floor(PART_PIXELS / width)) * width);
    function emit(filtered) {
      sums = kernels.adler32(filtered, sums);
      chunks.push(pool.chunk(filtered));
    }
    var bands;
    if (prefiltered && channels === 4) {
      for (var k = 0; k < prefiltered.parts.length; k++) {
        var part = prefiltered.parts[k];
        alphaOf(part.y0, part.rows, alpha);
        fillAlpha(part.filtered, alpha, width, part.rows);
        emit(part.filtered);
        part.filtered = null;
      }
      bands = prefiltered.bands;
    } else {
      bands = forEachPart(photo, maxPixels, function (rgba, y0, rows) {
        alphaOf(y0, rows, alpha);
        var n = rows * width;
        var out = channels === 4 ? rgba : new root.Uint8Array(n * channels);
        for (var i = 0; i < n; i++) {
          var a = alpha[i];
          if (channels === 4) {
            rgba[i * 4 + 3] = a;
          } else if (channels === 1) {
            out[i] = a;
          } else {
            var w = a / 255;
            out[i * 3] = rgba[i * 4] * w + bg[0] * (1 - w) + 0.5;
            out[i * 3 + 1] = rgba[i * 4 + 1] * w + bg[1] * (1 - w) + 0.5;
            out[i * 3 + 2] = rgba[i * 4 + 2] * w + bg[2] * (1 - w) + 0.5;
          }
        }
        emit(filterRows(out, width, channels, rows));
      });
    }
    return root.Promise.all(chunks).then(function (idat) {
      var header = new root.Uint8Array(13);
      header.set(kernels.uint32(width), 0);
      header.set(kernels.uint32(photo.height), 4);
      header.set([8, {1: 0, 3: 2, 4: 6}[channels], 0, 0, 0], 8);
      // The zlib stream: its header, the parts, a final empty block (fixed codes), the Adler-32.
      var end = new root.Uint8Array(6);
      end.set([0x03, 0x00], 0);
      end.set(kernels.uint32(sums), 2);
      var file = [new root.Uint8Array([137, 80, 78, 71, 13, 10, 26, 10])].concat(
        pngChunk("IHDR", header), pngChunk("IDAT", new root.Uint8Array([0x78, 0x01])), idat,
        pngChunk("IDAT", end), pngChunk("IEND", new root.Uint8Array(0)));
      return {blob: new root.Blob(file, {type: "image/png"}), width: width, height: photo.height,
              canvas: {mode: bands > 1 ? "tiles" : "whole", tiles: bands, maxPixels: maxPixels}};
    });
  }

  function fitInside(width, height, maxPixels) {
    if (width * height <= maxPixels) {
      return {width: width, height: height};
    }
    var scale = Math.sqrt(maxPixels / (width * height));
    return {width: Math.max(1, Math.floor(width * scale)), height: Math.max(1, Math.floor(height * scale))};
  }

  /*
   * The result through one canvas and its encoder (WebP, JPEG, or PNG where there is no
   * CompressionStream), at the largest size under the cap. The canvas premultiplies alpha, so the
   * colour of pixels with low alpha loses precision there (under alpha 0 it is gone).
   */
  function composeOnCanvas(photo, mask, plan, maxPixels) {
    var size = fitInside(photo.width, photo.height, maxPixels);
    var canvas = newCanvas(size.width, size.height);
    var ctx = context2d(canvas);
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(photo.source, 0, 0, size.width, size.height);
    var image = ctx.getImageData(0, 0, size.width, size.height);
    var data = image.data;
    var alpha = new root.Uint8Array(size.width * size.height);
    alphaRows(mask, size.width, size.height, plan)(0, size.height, alpha);
    var bg = plan.background;
    for (var i = 0; i < alpha.length; i++) {
      var a = alpha[i];
      if (plan.output === "rgba") {
        data[i * 4 + 3] = a;
      } else if (plan.output === "mask") {
        data[i * 4] = data[i * 4 + 1] = data[i * 4 + 2] = a;
      } else {
        var w = a / 255;
        data[i * 4] = data[i * 4] * w + bg[0] * (1 - w) + 0.5;
        data[i * 4 + 1] = data[i * 4 + 1] * w + bg[1] * (1 - w) + 0.5;
        data[i * 4 + 2] = data[i * 4 + 2] * w + bg[2] * (1 - w) + 0.5;
      }
    }
    ctx.putImageData(image, 0, 0);
    var quality = plan.quality !== null ? plan.quality / 100 : plan.format === "webp" ? 1 : 0.9;
    return canvasBlob(canvas, "image/" + plan.format, quality).then(function (blob) {
      canvas.width = canvas.height = 1;
      var reduced = size.width !== photo.width || size.height !== photo.height;
      return {blob: blob, width: size.width, height: size.height,
              canvas: {mode: reduced ? "reduced" : "whole", tiles: 1, maxPixels: maxPixels}};
    });
  }

  /* The small image with its mask, for onPreview: fast, approximate (canvas scaling and encoder). */
  function composePreview(photo, mask) {
    var scale = Math.min(1, PREVIEW_LONG_SIDE / Math.max(photo.width, photo.height));
    var preview = {width: Math.max(1, Math.round(photo.width * scale)), height: Math.max(1, Math.round(photo.height * scale))};
    return composeOnCanvas({source: photo.source, width: preview.width, height: preview.height}, mask,
                           {output: "rgba", format: "png", quality: null, threshold: null, reverse: false}, Infinity);
  }

  // -- the client -------------------------------------------------------------------------------

  function InspyrenetClient(options) {
    if (!(this instanceof InspyrenetClient)) {
      return new InspyrenetClient(options);
    }
    options = options || {};
    if (!options.primary) {
      throw new Error("InspyrenetClient: the primary endpoint's URL is required");
    }
    if (typeof root.Promise !== "function") {
      throw new Error("InspyrenetClient: this browser has no Promise; load a Promise polyfill first");
    }
    this.primary = trimSlash(options.primary);
    this.backup = options.backup ? trimSlash(options.backup) : null;
    this.apiKey = options.apiKey || null;
    this.timeoutMs = options.timeoutMs || 60000;  // per attempt: upload, queue, inference, download
    this.maxRetries = options.maxRetries === undefined ? 2 : options.maxRetries;  // 503 + Retry-After, per endpoint
    this.maxRetryAfterMs = options.maxRetryAfterMs === undefined ? 10000 : options.maxRetryAfterMs;
    // The mobile path's settings (docs/deploy.md): where to compose, the canvas cap, the upload.
    this.compose = options.compose || "browser";
    this.maxCanvasPixels = options.maxCanvasPixels || DEFAULT_MAX_CANVAS_PIXELS;
    this.uploadSize = options.uploadSize || DEFAULT_UPLOAD.size;
    this.uploadType = options.uploadType || DEFAULT_UPLOAD.type;
    this.uploadQuality = options.uploadQuality || DEFAULT_UPLOAD.quality;
    this.maskFormat = options.maskFormat || DEFAULT_MASK_FORMAT;
    this.features = options.features || {};  // {createImageBitmap: false, ...}: what a test switches off
  }

  InspyrenetClient.prototype.endpoints = function () {
    return this.backup ? [this.primary, this.backup] : [this.primary];
  };

  /*
   * POST /warmup to every endpoint, once per page load, and (for the mobile path) ask each for its
   * model's input size meanwhile. Resolves to [{endpoint, ok, status}]; never rejects.
   */
  InspyrenetClient.prototype.prewarm = function () {
    var client = this;
    var calls = [];
    var endpoints = this.endpoints();
    for (var i = 0; i < endpoints.length; i++) {
      if (!prewarmed[endpoints[i]]) {
        prewarmed[endpoints[i]] = client._warm(endpoints[i]);
      }
      calls.push(prewarmed[endpoints[i]]);
      if (this.compose !== "server") {
        this._describe(endpoints[i]);
      }
    }
    return root.Promise.all(calls);
  };

  InspyrenetClient.prototype._warm = function (endpoint) {
    var timeoutMs = this.timeoutMs;
    return new root.Promise(function (resolve) {
      try {
        var xhr = new root.XMLHttpRequest();
        xhr.open("POST", endpoint + "/warmup");
        xhr.timeout = timeoutMs;
        xhr.onload = function () {
          resolve({endpoint: endpoint, ok: xhr.status === 200, status: xhr.status});
        };
        xhr.onerror = xhr.ontimeout = function () {
          resolve({endpoint: endpoint, ok: false, status: 0});
        };
        xhr.send();
      } catch (error) {
        resolve({endpoint: endpoint, ok: false, status: 0});
      }
    });
  };

  /*
   * GET /info, once per endpoint while it answers: {mode, input: {width, height}, ...}. Resolves to
   * {status, info}: status 0 with no answer (forgotten, so the next cutout asks again).
   */
  InspyrenetClient.prototype._describe = function (endpoint) {
    if (!described[endpoint]) {
      var timeoutMs = this.timeoutMs;
      described[endpoint] = new root.Promise(function (resolve) {
        var xhr = new root.XMLHttpRequest();
        xhr.open("GET", endpoint + INFO_PATH);
        xhr.timeout = timeoutMs;
        xhr.onload = function () {
          var info = null;
          try {
            info = JSON.parse(xhr.responseText);
          } catch (ignored) {
            info = null;
          }
          var usable = xhr.status === 200 && info && info.input && info.input.width > 0 && info.input.height > 0;
          resolve({status: xhr.status, info: usable ? info : null});
        };
        xhr.onerror = xhr.ontimeout = function () {
          delete described[endpoint];
          resolve({status: 0, info: null});
        };
        xhr.send();
      });
    }
    return described[endpoint];
  };

  /*
   * cutout(blobOrFile, params, options) -> Promise<{blob, endpoint, backend, seconds, attempts,
   *   composedIn, width, height, bytesSent, bytesReceived, ...}>
   * params: the server's parameters ({output, format, bg_color, threshold, max_size, refine, quality, ...}).
   * options.onProgress(fraction, loaded, total, endpoint): upload progress, when the browser knows the size.
   * options.onPreview({blob, width, height, seconds}): the mobile path's small cutout, before the full one.
   * options.compose: "server" takes the server path for this call (the client's own setting otherwise).
   */
  InspyrenetClient.prototype.cutout = function (image, params, options) {
    options = options || {};
    params = params || {};
    var why = this._whyServerComposes(image, params, options);
    if (why === null) {
      return this._cutoutInBrowser(image, params, options);
    }
    return this._cutoutOnServer(image, params, options, now(), [], why);
  };

  InspyrenetClient.prototype._whyServerComposes = function (image, params, options) {
    if ((options.compose || this.compose) === "server") {
      return "asked for";
    }
    if (!image || typeof root.Blob === "undefined" || !(image instanceof root.Blob)) {
      return "the image is not a Blob";
    }
    var plan = compositionPlan(params);
    return typeof plan === "string" ? plan : missingFeature(this.features);
  };

  /*
   * Send with the retry and failover rules: send(endpoint, done) makes one attempt and calls
   * done(status, answer, xhr); a 200 resolves with answered(endpoint, answer, xhr).
   */
  InspyrenetClient.prototype._withRetries = function (attempts, send, answered) {
    var client = this;
    var endpoints = this.endpoints();
    return new root.Promise(function (resolve, reject) {
      function attempt(index, retries) {
        var endpoint = endpoints[index];
        send(endpoint, function (status, answer, xhr) {
          attempts.push({endpoint: endpoint, status: status});
          if (status === 200) {
            resolve(answered(endpoint, answer, xhr));
            return;
          }
          var wait = status === 503 && xhr ? retryAfterMs(xhr) : null;
          if (wait !== null && retries < client.maxRetries) {
            root.setTimeout(function () {
              attempt(index, retries + 1);
            }, Math.min(wait, client.maxRetryAfterMs));
            return;
          }
          if (status === 0 || status >= 500) {
            if (index + 1 < endpoints.length) {
              attempt(index + 1, 0);
              return;
            }
            if (status === 0 || !xhr) {
              reject(CutoutError("no answer from " + endpoint + " (network error or timeout; " +
                                 "from a web page, also a CORS setting that does not list this origin)", endpoint, 0, ""));
              return;
            }
          }
          readDetail(xhr, function (detail) {
            reject(CutoutError(endpoint + " answered " + status + ": " + detail, endpoint, status, detail));
          });
        });
      }
      attempt(0, 0);
    });
  };

  /* Today's path: the photo as it is; the server composes the cutout. */
  InspyrenetClient.prototype._cutoutOnServer = function (image, params, options, started, attempts, why) {
    var client = this;
    var onProgress = options.onProgress || null;
    return this._withRetries(attempts, function (endpoint, done) {
      client._send(endpoint, image, params, onProgress, function (xhr) {
        done(xhr ? xhr.status : 0, xhr && xhr.response, xhr);
      });
    }, function (endpoint, blob, xhr) {
      return {
        blob: blob,
        endpoint: endpoint,
        backend: xhr.getResponseHeader("X-Backend"),
        seconds: seconds(started),
        attempts: attempts,
        composedIn: "server",
        serverReason: why,
        width: headerNumber(xhr, "X-Image-Width"),
        height: headerNumber(xhr, "X-Image-Height"),
        bytesSent: image && image.size !== undefined ? image.size : null,
        bytesReceived: blob ? blob.size : null
      };
    });
  };

  /*
   * The mobile path: decode, resize to the model's input and upload that, get the mask, compose.
   * Failures of the browser's own steps (a format it cannot decode, a canvas it cannot allocate)
   * take the server path instead, with the reason in the result.
   */
  InspyrenetClient.prototype._cutoutInBrowser = function (image, params, options) {
    var client = this;
    var started = now();
    var plan = compositionPlan(params);
    var attempts = [];
    var timings = {};
    var uploads = {};  // "WxH" -> the promise of {blob, width, height}
    var photo = null;
    var pool = workerPool(this.features);
    var prefilter = {timer: null, rows: null};  // the photo's RGBA rows, filtered while the request is in flight
    function prefilterSoon() {
      if (prefilter.timer === null && plan.output === "rgba" && plan.format === "png") {
        prefilter.timer = root.setTimeout(function () {
          var begun = now();
          prefilter.rows = prefilterPhoto(photo, client.maxCanvasPixels);
          timings.prefilter = seconds(begun);
        }, 0);
      }
    }
    var mark = now();
    var decoded = decodePhoto(image, this.features).then(function (result) {
      photo = result;
      timings.decode = seconds(mark);
      return result;
    });

    function upload(info) {
      var key = info.input.width + "x" + info.input.height;
      if (!uploads[key]) {
        uploads[key] = decoded.then(function () {
          var begun = now();
          var size = uploadSize(photo, info.input, client.uploadSize);
          if (photo.width <= size.width && photo.height <= size.height) {
            timings.resize = 0;  // no larger than what would be sent: the photo itself is the upload
            return {blob: image, width: photo.width, height: photo.height};
          }
          return resizeLikePillow(photo, size.width, size.height, client.maxCanvasPixels).then(function (pixels) {
            timings.resize = seconds(begun);
            begun = now();
            return encodeUpload(pixels, size.width, size.height, client.uploadType, client.uploadQuality);
          }).then(function (blob) {
            timings.encodeUpload = seconds(begun);
            return {blob: blob, width: size.width, height: size.height};
          });
        });
      }
      return uploads[key];
    }

    var sent = null;
    var requestStarted = null;
    function send(endpoint, done) {
      client._describe(endpoint).then(function (described) {
        if (described.status === 0) {
          done(0, null, null);
          return null;
        }
        if (!described.info) {  // a server without /info (an older release): the server path there
          throw new Error(endpoint + " does not describe its model (GET /info answered " + described.status + ")");
        }
        return upload(described.info).then(function (prepared) {
          sent = prepared;
          requestStarted = now();
          client._send(endpoint, prepared.blob, {output: "mask", format: client.maskFormat}, options.onProgress || null,
                       function (xhr) {
                         timings.request = seconds(requestStarted);
                         done(xhr ? xhr.status : 0, xhr && xhr.response, xhr);
                       });
          prefilterSoon();
        });
      }).then(null, function (error) {
        done(-1, error, null);
      });
    }

    var failed = null;
    function sendOrFail(endpoint, done) {
      send(endpoint, function (status, answer, xhr) {
        if (status === -1) {
          failed = answer;
          done(200, null, null);  // ends the retries: the browser's own step failed, not the request
          return;
        }
        done(status, answer, xhr);
      });
    }

    return this._withRetries(attempts, sendOrFail, function (endpoint, maskBlob, xhr) {
      if (failed !== null) {
        return {fallback: failed};
      }
      root.clearTimeout(prefilter.timer);  // not begun yet: composed without it
      return client._composeAnswer(photo, maskBlob, plan, options, timings, pool, prefilter.rows).then(function (result) {
        prefilter.rows = null;
        result.endpoint = endpoint;
        result.backend = xhr.getResponseHeader("X-Backend");
        result.seconds = seconds(started);
        result.attempts = attempts;
        result.composedIn = "browser";
        result.decoder = photo.decoder;
        result.photoWidth = photo.width;
        result.photoHeight = photo.height;
        result.uploadWidth = sent.width;
        result.uploadHeight = sent.height;
        result.bytesSent = sent.blob.size;
        result.uploadType = sent.blob.type;
        result.bytesReceived = maskBlob.size;
        result.timings = timings;
        photo.close();
        return result;
      });
    }).then(function (result) {
      if (result.fallback) {
        if (photo) {
          photo.close();
        }
        attempts.pop();  // the step that failed in the browser was not an HTTP answer
        return client._cutoutOnServer(image, params, options, started, attempts, String(result.fallback.message || result.fallback));
      }
      return result;
    }, function (error) {
      if (photo) {
        photo.close();
      }
      throw error;
    });
  };

  InspyrenetClient.prototype._composeAnswer = function (photo, maskBlob, plan, options, timings, pool, prefiltered) {
    var client = this;
    var mark = now();
    var begun = mark;
    return decodeMask(maskBlob, this.features).then(function (mask) {
      timings.maskDecode = seconds(mark);
      var previewed = root.Promise.resolve();
      if (options.onPreview) {
        mark = now();
        previewed = composePreview(photo, mask).then(function (preview) {
          timings.preview = seconds(mark);
          options.onPreview({blob: preview.blob, width: preview.width, height: preview.height,
                             seconds: seconds(begun)});
        });
      }
      return previewed.then(function () {
        mark = now();
        var cap = client.maxCanvasPixels;
        var exact = plan.format === "png";
        var composed = !exact ? composeOnCanvas(photo, mask, plan, cap) :
          composePng(photo, mask, plan, cap, pool, prefiltered).then(null, function () {
            return composePng(photo, mask, plan, cap, new WorkerPool(0), null);  // a worker failed: here, then
          });
        return composed.then(function (result) {
          timings.compose = seconds(mark);
          result.encoder = exact ? "png, " + (pool.workers.length || "no") + " workers" : "canvas";
          return result;
        });
      });
    });
  };

  /* One request; done(xhr) on any HTTP answer, done(null) on a network error or a timeout. */
  InspyrenetClient.prototype._send = function (endpoint, image, params, onProgress, done) {
    var xhr = new root.XMLHttpRequest();
    var finished = false;
    function finish(answer) {
      if (!finished) {
        finished = true;
        done(answer);
      }
    }
    xhr.open("POST", endpoint + CUTOUT_PATH + query(params));
    xhr.responseType = "blob";
    xhr.timeout = this.timeoutMs;
    xhr.setRequestHeader("Content-Type", (image && image.type) || "application/octet-stream");
    if (this.apiKey) {
      xhr.setRequestHeader("X-API-Key", this.apiKey);
    }
    if (onProgress && xhr.upload) {
      xhr.upload.onprogress = function (event) {
        if (event.lengthComputable) {
          onProgress(event.loaded / event.total, event.loaded, event.total, endpoint);
        }
      };
    }
    xhr.onload = function () {
      finish(xhr);
    };
    xhr.onerror = xhr.ontimeout = xhr.onabort = function () {
      finish(null);
    };
    xhr.send(image);
  };

  InspyrenetClient.internals = {
    compositionPlan: compositionPlan,
    workerPool: workerPool,
    linearTaps: linearTaps,
    resizeLikePillow: resizeLikePillow,
    decodePhoto: decodePhoto,
    kernels: kernels,
    filterRows: filterRows
  };
  root.InspyrenetClient = InspyrenetClient;
  if (typeof module === "object" && module.exports) {
    module.exports = InspyrenetClient;
  }
})(typeof window !== "undefined" ? window : this);
