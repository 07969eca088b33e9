/* WebAuthn in the browser: security keys, platform biometrics and passkeys.
 *
 * No inline script (CSP script-src 'self'): buttons carry what they need in data attributes:
 *   data-webauthn      "register" | "authenticate" | "passkey"
 *   data-options-url   POST here (JSON) for the options
 *   data-verify-url    POST the credential here (JSON); the answer is {"redirect": url} or
 *                      {"error": message[, "redirect": url]}
 *   data-error         id of the element (role="alert") that shows a failure
 *   data-label-input   (register) id of the input naming the credential
 *   data-next          (passkey) where to go after the sign-in
 * The CSRF token comes from a hidden input named csrf_token (or a meta tag csrf-token) and
 * travels in the X-CSRFToken header.
 *
 * The server speaks the WebAuthn Level 3 JSON forms (binary values as base64url);
 * PublicKeyCredential.parseCreationOptionsFromJSON is not everywhere, so convert by hand.
 */
(function () {
  "use strict";

  function toBuffer(value) {
    var base64 = value.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) {
      base64 += "=";
    }
    var binary = window.atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return window.btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (item) {
      var out = { type: item.type || "public-key", id: toBuffer(item.id) };
      if (item.transports) {
        out.transports = item.transports;
      }
      return out;
    });
  }

  function creationOptions(json) {
    var options = Object.assign({}, json);
    options.challenge = toBuffer(json.challenge);
    options.user = Object.assign({}, json.user, { id: toBuffer(json.user.id) });
    options.excludeCredentials = descriptors(json.excludeCredentials);
    if (!options.hints) {
      delete options.hints;
    }
    return options;
  }

  function requestOptions(json) {
    var options = Object.assign({}, json);
    options.challenge = toBuffer(json.challenge);
    options.allowCredentials = descriptors(json.allowCredentials);
    return options;
  }

  function extensions(credential) {
    try {
      return credential.getClientExtensionResults();
    } catch (e) {
      return {};
    }
  }

  function registrationJSON(credential) {
    var response = credential.response;
    var transports = [];
    if (typeof response.getTransports === "function") {
      transports = response.getTransports();
    }
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: extensions(credential),
      response: {
        clientDataJSON: toBase64url(response.clientDataJSON),
        attestationObject: toBase64url(response.attestationObject),
        transports: transports
      }
    };
  }

  function assertionJSON(credential) {
    var response = credential.response;
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: extensions(credential),
      response: {
        clientDataJSON: toBase64url(response.clientDataJSON),
        authenticatorData: toBase64url(response.authenticatorData),
        signature: toBase64url(response.signature),
        userHandle: response.userHandle ? toBase64url(response.userHandle) : null
      }
    };
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) {
      return meta.getAttribute("content");
    }
    var input = document.querySelector('input[name="csrf_token"]');
    return input ? input.value : "";
  }

  function postJSON(url, body) {
    return window.fetch(url, {
      method: "POST",
      credentials: "same-origin",
      // The site sends Referrer-Policy: no-referrer; Flask-WTF wants a same-origin Referer
      // on HTTPS, so ask for one on this same-origin request.
      referrerPolicy: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-CSRFToken": csrfToken()
      },
      body: JSON.stringify(body || {})
    }).then(function (response) {
      return response.json().catch(function () {
        return { error: "The request was refused. Reload the page and try again." };
      }).then(function (data) {
        return { ok: response.ok, data: data || {} };
      });
    });
  }

  function browserMessage(error) {
    var name = error && error.name;
    if (name === "NotAllowedError" || name === "AbortError") {
      return "Nothing was verified: the request was cancelled, timed out, or your " +
        "authenticator could not verify you. Try again.";
    }
    if (name === "InvalidStateError") {
      return "This security key or device is already registered for your account.";
    }
    if (name === "SecurityError") {
      return "This site's address cannot be used with security keys or passkeys.";
    }
    if (name === "NotSupportedError") {
      return "Your authenticator does not support what this site needs " +
        "(user verification with a fingerprint, face, PIN or screen lock).";
    }
    return "Something went wrong talking to your security key. Try again.";
  }

  function Failure(message, redirect) {
    this.message = message;
    this.redirect = redirect;
  }

  function show(button, message) {
    var target = document.getElementById(button.getAttribute("data-error") || "");
    if (target) {
      target.textContent = message;
      target.hidden = false;
    }
  }

  function clear(button) {
    var target = document.getElementById(button.getAttribute("data-error") || "");
    if (target) {
      target.textContent = "";
      target.hidden = true;
    }
  }

  function checked(result) {
    if (!result.ok || !result.data || result.data.error) {
      throw new Failure((result.data && result.data.error) || "The request was refused.",
        result.data && result.data.redirect);
    }
    return result.data;
  }

  function browserCall(promise) {
    return promise.catch(function (error) {
      throw new Failure(browserMessage(error));
    });
  }

  function register(button) {
    var labelInput = document.getElementById(button.getAttribute("data-label-input") || "");
    return postJSON(button.getAttribute("data-options-url"), {}).then(checked)
      .then(function (json) {
        return browserCall(navigator.credentials.create({ publicKey: creationOptions(json) }));
      })
      .then(function (credential) {
        return postJSON(button.getAttribute("data-verify-url"), {
          credential: registrationJSON(credential),
          label: labelInput ? labelInput.value : ""
        });
      })
      .then(checked);
  }

  function authenticate(button, body) {
    return postJSON(button.getAttribute("data-options-url"), body).then(checked)
      .then(function (json) {
        return browserCall(navigator.credentials.get({ publicKey: requestOptions(json) }));
      })
      .then(function (credential) {
        return postJSON(button.getAttribute("data-verify-url"),
          { credential: assertionJSON(credential) });
      })
      .then(checked);
  }

  function run(button) {
    var kind = button.getAttribute("data-webauthn");
    var ceremony;
    if (kind === "register") {
      ceremony = register(button);
    } else if (kind === "passkey") {
      ceremony = authenticate(button, { next: button.getAttribute("data-next") || "" });
    } else {
      ceremony = authenticate(button, {});
    }
    return ceremony;
  }

  function bind(button) {
    if (!window.PublicKeyCredential || !navigator.credentials) {
      button.disabled = true;
      show(button, "This browser does not support security keys or passkeys.");
      return;
    }
    button.addEventListener("click", function (event) {
      event.preventDefault();
      if (button.disabled) {
        return;
      }
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      clear(button);
      run(button).then(function (data) {
        window.location.assign(data.redirect || "/account");
      }).catch(function (error) {
        button.disabled = false;
        button.removeAttribute("aria-busy");
        if (error instanceof Failure) {
          show(button, error.message);
          if (error.redirect) {
            window.setTimeout(function () { window.location.assign(error.redirect); }, 1500);
          }
        } else {
          show(button, "Something went wrong. Reload the page and try again.");
        }
      });
    });
  }

  function start() {
    var buttons = document.querySelectorAll("button[data-webauthn]");
    for (var i = 0; i < buttons.length; i++) {
      bind(buttons[i]);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
