//! Pipelines of the wgpu backend: each (shader stem, entry point, flags) compiled once per
//! device with its explicit bind-group layout and cached; the flags that specialise a shader;
//! binding a dispatch's buffers to a pipeline's layout and the workgroup grid it launches.

use std::sync::Arc;

use super::wgsl::preprocess;
use super::{dev_err, WgpuBackend};
use crate::error::{DriverError, Result};

pub(crate) const F_SUBGROUP: u32 = 1;
pub(crate) const F_T0_F16: u32 = 2;
pub(crate) const F_T1_F16: u32 = 4;
pub(crate) const F_T2_F16: u32 = 8;

/// Binding kinds of an explicit layout: binding 0 is always the uniform parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum B {
    /// read-only storage
    R,
    /// read-write storage
    W,
}

pub(crate) struct Pipe {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// Workgroups for `n` work items: a 2-D grid within the 65535-per-dimension limit; shaders
/// flatten it as `wid.x + wid.y * nwg.x` and return when past the end.
pub(crate) fn grid(n_groups: u64) -> (u32, u32) {
    let n = n_groups.max(1);
    if n <= 65535 {
        (n as u32, 1)
    } else {
        (65535, n.div_ceil(65535) as u32)
    }
}

impl WgpuBackend {
    /// The cached pipeline for `entry` of shader `src` under `flags`.
    pub(crate) fn pipe(&self, stem: &'static str, src: &'static str, entry: &'static str, flags: u32, binds: &[B]) -> Result<Arc<Pipe>> {
        let flags = if self.subgroups { flags | F_SUBGROUP } else { flags & !F_SUBGROUP };
        let mut map = self.pipes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(&(entry, flags)) {
            return Ok(p.clone());
        }
        let mut defs = Vec::new();
        let mut prelude = String::new();
        if flags & (F_T0_F16 | F_T1_F16 | F_T2_F16) != 0 {
            prelude.push_str("enable f16;\n");
        }
        for (i, bit) in [F_T0_F16, F_T1_F16, F_T2_F16].iter().enumerate() {
            let ty = if flags & bit != 0 { "f16" } else { "f32" };
            prelude.push_str(&format!("alias t{i}_t = {ty};\n"));
        }
        if flags & F_SUBGROUP != 0 {
            defs.push("SUBGROUP");
        }
        // Shared WGSL (shaders/common.wgsl) comes in through each shader's own include line.
        let code = prelude + &preprocess(src, &defs);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(stem), source: wgpu::ShaderSource::Wgsl(code.into()) });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: false, min_binding_size: None },
            count: None,
        }];
        for (i, b) in binds.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: *b == B::R },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(entry), entries: &entries });
        let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            let shader = format!("{stem}.wgsl `{entry}` (flags {flags:#x})");
            return Err(dev_err("shader compile", DriverError::Shader { shader, error: Arc::new(e) }));
        }
        let p = Arc::new(Pipe { pipeline, layout });
        map.insert((entry, flags), p.clone());
        Ok(p)
    }

    pub(crate) fn dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipe: &Pipe,
        params: &wgpu::Buffer,
        bufs: &[&wgpu::Buffer],
        groups: (u32, u32),
    ) {
        let binds: Vec<wgpu::BufferBinding> = bufs.iter().map(|b| b.as_entire_buffer_binding()).collect();
        self.dispatch_bound(enc, pipe, params, &binds, groups);
    }

    /// [`Self::dispatch`] with buffer ranges (sections of a staged upload) as bindings.
    pub(crate) fn dispatch_bound(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipe: &Pipe,
        params: &wgpu::Buffer,
        binds: &[wgpu::BufferBinding],
        groups: (u32, u32),
    ) {
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() }];
        for (i, b) in binds.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: wgpu::BindingResource::Buffer(b.clone()) });
        }
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipe.layout, entries: &entries });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        pass.set_pipeline(&pipe.pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }
}
