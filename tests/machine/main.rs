//! Whole-machine tests: the built-in demo guest on every engine, Multiboot kernels (ELF and
//! a.out kludge) built in the test, bad inputs and their error messages, the KVM engine, and
//! switching a running guest between engines.

mod acpi;
mod apic;
mod demo;
mod firmware;
mod kernels;
mod kvm;
mod linux;
mod serial;
mod switching;
mod timers;
