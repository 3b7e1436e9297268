# What users run by hand today: does pyvista render headless in this image, and with what?
import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
import pyvista as pv

plotter = pv.Plotter(off_screen=True, window_size=(400, 300))
plotter.add_mesh(pv.Sphere(), color="tomato")
plotter.add_mesh(pv.Cube(center=(1.5, 0, 0)), color="steelblue")
image = plotter.screenshot("/tmp/render.png")
print("render:", plotter.ren_win.GetClassName(), image.shape)
plotter.close()
