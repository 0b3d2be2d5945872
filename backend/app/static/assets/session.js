// The admin token: kept in sessionStorage only (gone with the tab), sent as a Bearer header.
// Its payload is decoded here only to show who is signed in and until when; the API verifies it.
// Either kind works: the service's own (sub, role, exp) or the identity provider's access token,
// whose sub is often an opaque id beside a preferred_username or email, and whose role sits in
// a claim the page does not need to know (the API decides).

const KEY = "goal-migration.admin-token";

export function storedToken() {
  return window.sessionStorage.getItem(KEY);
}

export function storeToken(token) {
  window.sessionStorage.setItem(KEY, token);
}

export function forgetToken() {
  window.sessionStorage.removeItem(KEY);
}

export function claimsOf(token) {
  const parts = token.split(".");
  if (parts.length !== 3) {
    throw new Error("This is not a token: a token has three parts separated by dots.");
  }
  let claims;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    claims = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new Error("This token's payload cannot be read; copy the whole token.");
  }
  const named = (value) => typeof value === "string" && value.trim() !== "";
  return {
    who: [claims.preferred_username, claims.email, claims.sub].find(named) || "",
    exp: typeof claims.exp === "number" ? claims.exp : null,
  };
}

export function expired(claims, now = Date.now()) {
  return claims.exp !== null && claims.exp * 1000 <= now;
}
