//! The host side of `wit/policy.wit`, generated once here. Nothing outside `policy/` sees
//! wasmtime: the rest of the relay uses the plain data types re-exported by `policy`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
    // Host functions may fail (a store error, a too-large request): that traps the guest,
    // which the engine turns into the policy's fail mode.
    imports: { default: trappable },
    with: {
        "chatmail:policy/message.message": crate::policy::call::MessageHandle,
    },
    additional_derives: [PartialEq],
});

pub use chatmail::policy::{host, kv, message, types};
