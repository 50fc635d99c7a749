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
 * cutout() sends the image as a raw body (XMLHttpRequest: upload progress works everywhere).
 * A 503 with Retry-After (the server's admission limit, or a worker being replaced) is waited
 * out and retried on the same endpoint, at most `maxRetries` times; a network error, a timeout
 * or any other 5xx fails over to the backup. A 4xx is the request's own fault (a corrupt image,
 * a bad parameter, a wrong key): it is not sent again anywhere.
 */
(function (root) {
  "use strict";

  var CUTOUT_PATH = "/v1/remove-background";
  var prewarmed = {};  // endpoint -> the promise of its /warmup: once per page load

  function now() {
    return root.performance && root.performance.now ? root.performance.now() : new Date().getTime();
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
    var seconds = Number(value);
    if (!isNaN(seconds)) {
      return Math.max(0, seconds * 1000);
    }
    var date = Date.parse(value);  // Retry-After may also be an HTTP date
    return isNaN(date) ? null : Math.max(0, date - new Date().getTime());
  }

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
  }

  InspyrenetClient.prototype.endpoints = function () {
    return this.backup ? [this.primary, this.backup] : [this.primary];
  };

  /* POST /warmup to every endpoint, once per page load. Resolves to [{endpoint, ok, status}]; never rejects. */
  InspyrenetClient.prototype.prewarm = function () {
    var client = this;
    var calls = [];
    var endpoints = this.endpoints();
    for (var i = 0; i < endpoints.length; i++) {
      if (!prewarmed[endpoints[i]]) {
        prewarmed[endpoints[i]] = client._warm(endpoints[i]);
      }
      calls.push(prewarmed[endpoints[i]]);
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
   * cutout(blobOrFile, params, options) -> Promise<{blob, endpoint, backend, seconds, attempts}>
   * params: the server's parameters ({output, format, bg_color, threshold, max_size, refine, quality, ...}).
   * options.onProgress(fraction, loaded, total, endpoint): upload progress, when the browser knows the size.
   */
  InspyrenetClient.prototype.cutout = function (image, params, options) {
    var client = this;
    var endpoints = this.endpoints();
    var onProgress = (options && options.onProgress) || null;
    var started = now();
    var attempts = [];
    return new root.Promise(function (resolve, reject) {
      function attempt(index, retries) {
        var endpoint = endpoints[index];
        client._send(endpoint, image, params || {}, onProgress, function (xhr) {
          var status = xhr ? xhr.status : 0;
          attempts.push({endpoint: endpoint, status: status});
          if (status === 200) {
            resolve({
              blob: xhr.response,
              endpoint: endpoint,
              backend: xhr.getResponseHeader("X-Backend"),
              seconds: (now() - started) / 1000,
              attempts: attempts
            });
            return;
          }
          var wait = status === 503 ? retryAfterMs(xhr) : null;
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
            if (status === 0) {
              reject(CutoutError("no answer from " + endpoint + " (network error or timeout)", endpoint, 0, ""));
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

  root.InspyrenetClient = InspyrenetClient;
  if (typeof module === "object" && module.exports) {
    module.exports = InspyrenetClient;
  }
})(typeof window !== "undefined" ? window : this);
