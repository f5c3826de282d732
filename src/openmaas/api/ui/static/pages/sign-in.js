// Exchange the key for a session cookie; the key leaves the page's memory at once.
const form = document.getElementById("sign-in-form");
const input = document.getElementById("api-key");
const status = document.getElementById("status");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = input.value.trim();
  input.value = "";
  status.textContent = "Signing in…";
  const response = await fetch("/ui/session", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ key }),
    credentials: "same-origin",
  });
  if (response.ok) {
    window.location.assign("/ui/");
    return;
  }
  const body = await response.json().catch(() => null);
  status.textContent = body?.error?.message ?? `Sign-in failed (HTTP ${response.status})`;
  input.focus();
});
