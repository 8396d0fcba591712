//! The page shell (sidebar, top bar with the workspace switcher and sign-out) and shared bits
//! (icons, form fields).

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{assets, Auth, PageError, WebState};
use crate::app;
use crate::domain::Workspace;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Keys,
    Workspaces,
}

/// What every signed-in page needs around its content.
pub struct Shell<'a> {
    pub auth: &'a Auth,
    pub workspace: Option<&'a Workspace>,
    /// Every workspace, for the admin's switcher (empty for console sessions).
    pub workspaces: Vec<Workspace>,
}

impl<'a> Shell<'a> {
    pub async fn load(
        state: &WebState,
        auth: &'a Auth,
        workspace: Option<&'a Workspace>,
    ) -> Result<Shell<'a>, PageError> {
        let workspaces = if auth.principal().is_admin() {
            app::workspaces::list(&state.app, auth.principal()).await?
        } else {
            Vec::new()
        };
        Ok(Shell {
            auth,
            workspace,
            workspaces,
        })
    }

    pub fn render(&self, title: &str, nav: Nav, content: Markup) -> Markup {
        let admin = self.auth.principal().is_admin();
        html! {
            (DOCTYPE)
            html lang="en" {
                head { (head(title)) }
                body {
                    a.skip-link href="#main" { "Skip to content" }
                    div.app {
                        aside.sidebar aria-label="Main navigation" {
                            div.brand { a href="/ui" { (logo()) } }
                            @if let Some(ws) = self.workspace {
                                nav {
                                    p.nav-heading { "Workspace" }
                                    ul.nav {
                                        li { (nav_link(&format!("/ui/w/{}/overview", ws.id), "Overview", icon_chart(), nav == Nav::Overview)) }
                                        li { (nav_link(&format!("/ui/w/{}/keys", ws.id), "API Keys", icon_key(), nav == Nav::Keys)) }
                                    }
                                }
                            }
                            @if admin {
                                nav aria-label="Administration" {
                                    p.nav-heading { "Admin" }
                                    ul.nav {
                                        li { (nav_link("/ui/workspaces", "Workspaces", icon_grid(), nav == Nav::Workspaces)) }
                                    }
                                }
                            }
                        }
                        div.main-col {
                            header.topbar {
                                div.topbar-left {
                                    @if admin && !self.workspaces.is_empty() {
                                        form.switcher method="get" action="/ui/switch" {
                                            label for="ws-switch" { "Workspace" }
                                            select #ws-switch name="ws" data-autosubmit {
                                                @if self.workspace.is_none() {
                                                    option value="" selected { "Choose…" }
                                                }
                                                @for ws in &self.workspaces {
                                                    option value=(ws.id) selected[self.workspace.is_some_and(|w| w.id == ws.id)] {
                                                        (ws.name)
                                                    }
                                                }
                                            }
                                            button.btn.btn-small.js-hide type="submit" { "Switch" }
                                        }
                                    } @else if let Some(ws) = self.workspace {
                                        span.ws-name { (ws.name) }
                                        span.badge.badge-neutral { (ws.plan) }
                                    }
                                }
                                div.topbar-right {
                                    span.who {
                                        @if admin { "Admin" } @else { "Console" }
                                    }
                                    form method="post" action="/ui/signout" {
                                        input type="hidden" name="csrf" value=(self.auth.session.csrf());
                                        button.btn.btn-ghost.btn-small type="submit" { "Sign out" }
                                    }
                                }
                            }
                            main #main tabindex="-1" { (content) }
                        }
                    }
                    div #toast role="status" aria-live="polite" {}
                }
            }
        }
    }
}

pub fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        meta name="color-scheme" content="light";
        title { (title) " · Tollgate" }
        link rel="icon" type="image/svg+xml" href=(assets::url("favicon.svg"));
        link rel="stylesheet" href=(assets::url("app.css"));
        script src=(assets::url("app.js")) defer {}
    }
}

fn nav_link(href: &str, label: &str, icon: Markup, current: bool) -> Markup {
    html! {
        a.nav-link.active[current] href=(href) aria-current=[current.then_some("page")] {
            (icon) span { (label) }
        }
    }
}

pub fn logo() -> Markup {
    html! {
        span.logo {
            svg width="28" height="28" viewBox="0 0 32 32" aria-hidden="true" focusable="false" {
                rect width="32" height="32" rx="8" fill="#2563eb" {}
                path d="M9 11h14M16 11v12M11 16h10" stroke="#fff" stroke-width="2.6" stroke-linecap="round" fill="none" {}
            }
            span.logo-text { "Tollgate" }
        }
    }
}

/// A labelled form field with its error (from the API's validation message) beside it.
pub fn field(
    id: &str,
    label: &str,
    hint: Option<&str>,
    error: Option<&str>,
    input: Markup,
) -> Markup {
    html! {
        div.field.has-error[error.is_some()] {
            label for=(id) { (label) }
            (input)
            @if let Some(hint) = hint {
                p.hint id={(id) "-hint"} { (hint) }
            }
            @if let Some(error) = error {
                p.field-error id={(id) "-error"} role="alert" { (error) }
            }
        }
    }
}

fn svg_icon(path: &str) -> Markup {
    html! {
        svg.icon width="18" height="18" viewBox="0 0 24 24" fill="none" stroke="currentColor"
            stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false" {
            (PreEscaped(path))
        }
    }
}

pub fn icon_chart() -> Markup {
    svg_icon(
        r#"<path d="M3 3v18h18"/><rect x="7" y="12" width="3" height="6"/><rect x="12" y="8" width="3" height="10"/><rect x="17" y="5" width="3" height="13"/>"#,
    )
}
pub fn icon_key() -> Markup {
    svg_icon(r#"<circle cx="7.5" cy="15.5" r="4.5"/><path d="M10.7 12.3 21 2M16 7l3 3M14 9l2 2"/>"#)
}
pub fn icon_grid() -> Markup {
    svg_icon(
        r#"<rect x="3" y="3" width="7" height="7"/><rect x="14" y="3" width="7" height="7"/><rect x="3" y="14" width="7" height="7"/><rect x="14" y="14" width="7" height="7"/>"#,
    )
}
pub fn icon_copy() -> Markup {
    svg_icon(
        r#"<rect x="9" y="9" width="12" height="12" rx="2"/><path d="M5 15H4a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1h10a1 1 0 0 1 1 1v1"/>"#,
    )
}
pub fn icon_power() -> Markup {
    svg_icon(r#"<path d="M12 2v10"/><path d="M18.4 6.6a9 9 0 1 1-12.8 0"/>"#)
}
pub fn icon_rotate() -> Markup {
    svg_icon(r#"<path d="M21 12a9 9 0 1 1-2.6-6.4"/><path d="M21 3v6h-6"/>"#)
}
pub fn icon_trash() -> Markup {
    svg_icon(r#"<path d="M3 6h18M8 6V4h8v2M19 6l-1 14H6L5 6"/>"#)
}
pub fn icon_plus() -> Markup {
    svg_icon(r#"<path d="M12 5v14M5 12h14"/>"#)
}
pub fn icon_back() -> Markup {
    svg_icon(r#"<path d="M19 12H5M12 19l-7-7 7-7"/>"#)
}
pub fn icon_warning() -> Markup {
    svg_icon(
        r#"<path d="M10.3 3.9 1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z"/><path d="M12 9v4M12 17h.01"/>"#,
    )
}
pub fn icon_download() -> Markup {
    svg_icon(
        r#"<path d="M21 15v4a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2v-4"/><path d="M7 10l5 5 5-5M12 15V3"/>"#,
    )
}
pub fn icon_columns() -> Markup {
    svg_icon(r#"<rect x="3" y="4" width="18" height="16" rx="2"/><path d="M9 4v16M15 4v16"/>"#)
}
