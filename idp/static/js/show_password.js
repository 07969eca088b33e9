// Show-password toggles: <button type="button" data-show-password aria-controls="id1 id2"
// aria-pressed="false" hidden>. The button stays hidden without JavaScript (nothing to press
// that does nothing); pressing it shows or hides the password fields it controls and says
// which through aria-pressed (its name does not change). The fields keep their name, id and
// autocomplete, and are turned back into password fields before the form is sent, so password
// managers see a password field being submitted.
document.addEventListener('DOMContentLoaded', () => {
  document.querySelectorAll('button[data-show-password]').forEach((button) => {
    const fields = (button.getAttribute('aria-controls') || '').split(/\s+/)
      .map((id) => document.getElementById(id)).filter((el) => el !== null);
    if (fields.length === 0) return;
    const show = (visible) => {
      fields.forEach((field) => { field.type = visible ? 'text' : 'password'; });
      button.setAttribute('aria-pressed', visible ? 'true' : 'false');
    };
    button.addEventListener('click', () => {
      show(button.getAttribute('aria-pressed') !== 'true');
    });
    const form = fields[0].form;
    if (form) form.addEventListener('submit', () => show(false));
    button.hidden = false;
  });
});
