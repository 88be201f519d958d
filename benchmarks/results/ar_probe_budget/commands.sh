# The AR probe at 2,000 GPT steps instead of its default 300, on the reproduction's
# semhitok-tiny and vqgan-tiny (the same commands and seeds as benchmarks/reproduce.py,
# hence the same tokenizers: PSNR 16.69 / 15.51). Run from the repository root;
# the judge was the reproduction's (cached by dataset). results.json / .md and
# samples_grid.png here are its output.
set -e
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
R=runs/ar-probe-budget
tokzoo train clip recipe.steps=200 run_dir=$R/clip data.train_size=4096
tokzoo train vqgan-tiny recipe.steps=300 run_dir=$R/vqgan-tiny data.train_size=4096 trainer.batch_size=16 recipe.disc_start=225
tokzoo train semhitok-tiny recipe.stage1_steps=150 recipe.stage2_steps=300 model.teacher.checkpoint=$R/clip \
    run_dir=$R/semhitok-tiny data.train_size=4096 trainer.batch_size=16 recipe.disc_start=225
tokzoo bench --tokenizers $R/semhitok-tiny,$R/vqgan-tiny --data shapes --num-images 512 --probe-train-images 1024 \
    --metrics psnr,probe,ar-probe metrics.ar-probe.steps=2000 --out $R/bench-2000
