// The admin page: sign in with a token, then one view per hash route (#/, #/jobs, #/jobs/ID,
// #/verify). Views call the admin API; the page itself decides nothing the API decides.

import { createApi } from "./api.js";
import { clock, when } from "./dom.js";
import { historyView } from "./history.js";
import { jobView } from "./job.js";
import { migrateView } from "./migrate.js";
import { claimsOf, expired, forgetToken, storedToken, storeToken } from "./session.js";
import { verifyView } from "./verify.js";

const $ = (id) => document.getElementById(id);
const signin = $("signin");
const signinMessage = $("signin-message");
const tokenInput = $("token");
const nav = $("nav");
const who = $("who");
const viewRoot = $("view");

let token = null;
let claims = null;
let view = null;
let expiryCheck = null;

const api = createApi({
  token: () => token || "",
  onAuthFailure: (error) =>
    signOut(
      error.status === 403
        ? `This token is not an admin's (${error.message}). Sign in with an admin token.`
        : `The API refused the token (${error.message}). Sign in again with a new token.`,
    ),
});

function stopView() {
  if (view) view.stop();
  view = null;
  viewRoot.replaceChildren();
}

function showSignIn(message) {
  nav.hidden = true;
  who.hidden = true;
  signin.hidden = false;
  signinMessage.textContent = message || "";
  signinMessage.hidden = !message;
  tokenInput.value = "";
  document.title = "Sign in · Goal migration";
  tokenInput.focus();
}

function signOut(message) {
  forgetToken();
  token = null;
  claims = null;
  if (expiryCheck) clearInterval(expiryCheck);
  expiryCheck = null;
  for (const dialog of document.querySelectorAll("dialog")) dialog.close();
  stopView();
  showSignIn(message);
}

function signedIn() {
  signin.hidden = true;
  nav.hidden = false;
  who.hidden = false;
  $("who-sub").textContent = claims.who || "(no subject)";
  $("who-exp").textContent = claims.exp ? `token expires ${when(claims.exp * 1000)}` : "token has no expiry";
  if (expiryCheck) clearInterval(expiryCheck);
  expiryCheck = setInterval(() => {
    if (claims && expired(claims)) {
      signOut(`Your token expired at ${clock(new Date(claims.exp * 1000))}. Sign in again with a new token.`);
    }
  }, 1000);
  route(false);
}

async function trySignIn(candidate) {
  let parsed;
  try {
    parsed = claimsOf(candidate);
  } catch (error) {
    showSignIn(error.message);
    return;
  }
  if (expired(parsed)) {
    showSignIn(`This token expired at ${when(parsed.exp * 1000)}. Mint a new one.`);
    return;
  }
  token = candidate;
  try {
    await api.jobs(1, 0); // the API, not the page, decides whether the token is good
  } catch (error) {
    if (!error.authFailure) {
      token = null;
      showSignIn(`Could not check the token: ${error.message}`);
    }
    return;
  }
  claims = parsed;
  storeToken(candidate);
  signedIn();
}

const VIEWS = { "": migrateView, jobs: historyView, verify: verifyView };

function route(moveFocus = true) {
  if (!token) return;
  stopView();
  const [section = "", id] = window.location.hash.replace(/^#\/?/, "").split("/");
  const make = section === "jobs" && id ? (ctx) => jobView(ctx, decodeURIComponent(id)) : VIEWS[section] || migrateView;
  view = make({ api });
  viewRoot.append(view.el);
  document.title = `${view.title} · Goal migration`;
  const current = section === "jobs" ? "#/jobs" : `#/${section}`;
  for (const a of nav.querySelectorAll("a")) {
    if (a.getAttribute("href") === current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (moveFocus) view.heading.focus();
}

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const button = event.submitter || $("signin-button");
  if (button.disabled) return;
  button.disabled = true;
  trySignIn(tokenInput.value.trim()).finally(() => {
    button.disabled = false;
  });
});
$("sign-out").addEventListener("click", () => signOut("Signed out. The token was removed from this tab."));
window.addEventListener("hashchange", () => route(true));

const saved = storedToken();
if (saved) {
  try {
    claims = claimsOf(saved);
    if (expired(claims)) {
      signOut(`Your token expired at ${when(claims.exp * 1000)}. Sign in again with a new token.`);
    } else {
      token = saved;
      signedIn();
    }
  } catch (error) {
    signOut(error.message);
  }
} else {
  showSignIn("");
}
